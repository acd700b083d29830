"""Signed records: Ed25519 keys, and DSSE envelopes over in-toto Statements (docs/security.md).

A hash chain and a seal prove that bytes did not change by accident; anyone who can edit the
files can recompute both. A signature by a key the reviewer trusts proves more: that the holder
of the private key wrote these figures. The envelope is DSSE (the Dead Simple Signing Envelope,
what in-toto and Sigstore use for attestations): the payload is an in-toto Statement v1 whose
subject is the file signed (name and SHA-256) and whose predicate holds the figures a reviewer
reads without opening the file. The signature covers DSSE's pre-authentication encoding of the
payload type and the payload, so neither can be swapped.

Keys: ``auditor keys new NAME`` writes NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub
(SubjectPublicKeyInfo PEM). A key's id is ``ed25519:`` and the SHA-256 of its raw public bytes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.files import FileRefused, describe, read_regular

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
LEDGER_PREDICATE = "https://github.com/auditor/auditor/attestations/ledger-head/v1"
DOSSIER_PREDICATE = "https://github.com/auditor/auditor/attestations/dossier/v1"
MAX_KEY_BYTES = 16_384


class SigningError(Exception):
    """A key that cannot be made or read; str() is one line naming the file."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed, so that the type cannot be swapped."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def statement(name: str, sha256: str, predicate_type: str, predicate: dict[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1 about one file."""
    return {"_type": STATEMENT_TYPE, "subject": [{"name": name, "digest": {"sha256": sha256}}],
            "predicateType": predicate_type, "predicate": predicate}


def _keyid(raw_public: bytes) -> str:
    return "ed25519:" + hashlib.sha256(raw_public).hexdigest()


def _load_pem(path: Path, private: bool):
    """(the key, its id) from a PEM file holding an Ed25519 private or public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    what = "signing key" if private else "public key"
    try:
        raw = read_regular(path, MAX_KEY_BYTES)
    except (OSError, FileRefused) as exc:
        raise SigningError(f"{path}: cannot read the {what}: {describe(exc)}") from None
    try:
        key = serialization.load_pem_private_key(raw, password=None) if private else \
            serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path}: not an unencrypted PEM {what} ({' '.join(str(exc).split())[:120]})") from None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise SigningError(f"{path}: a {type(key).__name__}, not an Ed25519 {what} (make one with auditor keys new)")
    public = key.public_key() if private else key
    return key, _keyid(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@dataclass(frozen=True)
class SigningKey:
    """A private key to sign with; ``name`` (the file's stem) is only a label."""
    private: Any
    keyid: str
    name: str

    @classmethod
    def load(cls, path: str | Path) -> "SigningKey":
        return cls(*_load_pem(Path(path), private=True), Path(path).stem)

    def sign(self, statement_: dict[str, Any]) -> dict[str, Any]:
        """A DSSE envelope over the Statement."""
        payload = canonical(statement_)
        signature = self.private.sign(pae(PAYLOAD_TYPE, payload))
        return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
                "signatures": [{"keyid": self.keyid, "sig": base64.b64encode(signature).decode()}]}


@dataclass(frozen=True)
class TrustedKey:
    """A public key a reviewer trusts; ``name`` is its file's stem, as verify reports it."""
    public: Any
    keyid: str
    name: str

    @classmethod
    def load(cls, path: str | Path) -> "TrustedKey":
        return cls(*_load_pem(Path(path), private=False), Path(path).stem)


def signing_key_from(value: str | Path | SigningKey | None, *, not_in: Path | None = None) -> SigningKey | None:
    """A SigningKey from a path, or $AUDITOR_SIGNING_KEY when ``value`` is None; None if neither.
    ``not_in``: a folder the key must not be in (the run folder, which reviewers receive)."""
    if isinstance(value, SigningKey):
        return value
    value = value if value is not None else os.environ.get("AUDITOR_SIGNING_KEY") or None
    if value is None:
        return None
    if not_in is not None and Path(value).resolve().is_relative_to(Path(not_in).resolve()):
        raise SigningError(f"{value}: the signing key is inside the run folder {not_in}, which reviewers receive; "
                           f"keep it elsewhere")
    return SigningKey.load(value)


def new_keypair(name: str | Path) -> tuple[Path, Path]:
    """Write NAME.key (0600, created exclusively: an existing key is never overwritten) and NAME.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    base = Path(name)
    key_path, pub_path = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise SigningError(f"{path}: already exists; a key is never overwritten (choose another name)")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private)
        os.chmod(key_path, 0o600)                     # whatever the umask
        fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(public)
    except OSError as exc:
        raise SigningError(f"{base}: cannot write the key pair: {describe(exc)}") from None
    return key_path, pub_path


@dataclass
class Opened:
    """What an envelope says and who signed it.

    ``statement``: the payload (None when it cannot be read). ``signers``: the trusted keys whose
    signature verifies. ``keyids``: every key id the envelope names. ``problem``: why it is not
    acceptable, where ``trusted`` keys were given (None when one of them signed it)."""
    statement: dict[str, Any] | None
    signers: list[TrustedKey]
    keyids: list[str]
    problem: str | None


def open_envelope(envelope: Any, trusted: list[TrustedKey]) -> Opened:
    """Read a DSSE envelope; with ``trusted`` keys, check its signatures against them."""
    if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE or \
            not isinstance(envelope.get("payload"), str) or not isinstance(envelope.get("signatures"), list):
        return Opened(None, [], [], "not a DSSE envelope of an in-toto Statement")
    try:
        payload = _b64(envelope["payload"])
        body = json.loads(payload)
    except (binascii.Error, ValueError, RecursionError):
        return Opened(None, [], [], "its payload is not base64 JSON")
    if not isinstance(body, dict) or body.get("_type") != STATEMENT_TYPE:
        return Opened(None, [], [], "its payload is not an in-toto Statement v1")
    sigs = [s for s in envelope["signatures"] if isinstance(s, dict)]
    keyids = [str(s.get("keyid")) for s in sigs]
    signers = []
    for sig in sigs:
        key = next((k for k in trusted if k.keyid == sig.get("keyid")), None)
        if key is None or key in signers:
            continue
        try:
            key.public.verify(_b64(str(sig.get("sig"))), pae(PAYLOAD_TYPE, payload))
        except Exception:             # InvalidSignature, or a signature that is not base64
            continue
        signers.append(key)
    problem = None
    if trusted and not signers:
        known = [k for k in trusted if k.keyid in keyids]
        problem = ("its signature does not verify with the trusted key " + ", ".join(k.name for k in known)
                   if known else "it is signed by " + (", ".join(short_id(k) for k in keyids) or "no key") +
                   ", not by a trusted key")
    return Opened(body, signers, keyids, problem)


def _b64(text: str) -> bytes:
    """Strict base64: padded, and canonical (a changed pad bit decodes to the same bytes otherwise)."""
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise binascii.Error("not canonical base64")
    return raw


def short_id(keyid: str) -> str:
    """'ed25519:3fa2b1c4d5e6f708' for messages."""
    kind, _, digest = keyid.partition(":")
    return f"{kind}:{digest[:16]}" if digest else keyid[:24]


def subject_digest(statement_: dict[str, Any]) -> str | None:
    """The SHA-256 the Statement's first subject names, or None."""
    try:
        return str(statement_["subject"][0]["digest"]["sha256"])
    except (KeyError, IndexError, TypeError):
        return None
