"""The audit dossier: canonical JSON first, sealed; Markdown and HTML are rendered from it.

Canonical form: ``json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True) + "\\n"``, ints
for every count. The seal is the SHA-256 of the canonical form of the dossier without its
``seal`` member. The file on disk must be exactly the canonical form of what it holds, so a
changed byte is caught whether it changes a value (the digest differs) or only the layout (the
bytes are no longer canonical).
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from auditor.files import FileRefused, describe, read_regular, write_atomic
from auditor.resources import installed_version
from auditor.text import printable

SCHEMA_VERSION = "1"
DOSSIER_NAME = "dossier.json"
MAX_BYTES = 256_000_000


class DossierError(Exception):
    """A dossier that cannot be read (exit 2) or does not verify (exit 1, ``tampered``)."""

    def __init__(self, message: str, *, tampered: bool = False):
        super().__init__(message)
        self.tampered = tampered


def canonical(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in data.items() if k != "seal"})).hexdigest()


def build(preflight: dict[str, Any] | None = None, *, run: str, config_path: str | Path | None = None,
          tracked: dict[str, Any] | None = None, created: datetime | None = None, signer=None) -> dict[str, Any]:
    """A sealed dossier from a preflight's dict and/or a tracked run's summary; signed by ``signer``
    (signing.SigningKey) where given."""
    from auditor import __version__

    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run": run,
        "created": (created or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "tool": {"auditor": __version__, "torch": installed_version("torch"),
                 "transformers": installed_version("transformers")},
        "kind": "tracked" if tracked else "preflight",
    }
    if config_path is not None:
        from auditor.inputs.yaml_reader import MAX_FILE_BYTES

        raw = read_regular(config_path, MAX_FILE_BYTES)
        data["config"] = {"path": printable(config_path), "text": raw.decode("utf-8", errors="replace"),
                          "sha256": hashlib.sha256(raw).hexdigest()}
    source = tracked or preflight or {}
    for key in ("total_flops", "low", "high", "estimates", "verdicts", "uncovered_ops", "as_of"):
        if key in source:
            data[key] = source[key]
    if preflight and not tracked:
        # a plan's record: the preflight's JSON contract whole, at the top, with the seal around it
        data.update({k: v for k, v in preflight.items() if k not in data})
    elif preflight:
        data["preflight"] = {k: preflight[k] for k in ("notification", "model", "tokens", "lineage", "modality",
                                                         "central_method", "skipped_methods") if k in preflight}
        data["planned"] = {k: preflight[k] for k in ("total_flops", "low", "high", "estimates")}
    if tracked:
        from auditor.record.run_facts import DOSSIER_KEYS

        data["tracked"] = {k: tracked[k] for k in ("eval_flops", "recompute_flops", "steps", "series", "ledger",
                                                   "flops_by_phase", "hardware_flops", "authorization",
                                                   *DOSSIER_KEYS) if k in tracked}
    return seal(data, signer)


def ledger_head(data: dict[str, Any]) -> str | None:
    """The ledger head a tracked dossier names (None for a plan, or where it is missing)."""
    tracked = data.get("tracked")
    ledger = tracked.get("ledger") if isinstance(tracked, dict) else None
    head = ledger.get("head") if isinstance(ledger, dict) else None
    return head if isinstance(head, str) else None


def _seal_of(data: dict[str, Any]) -> dict[str, str]:
    head = ledger_head(data)
    return {"algorithm": "sha256", "digest": digest(data), **({"ledger_head": head} if head else {})}


def seal(data: dict[str, Any], signer=None) -> dict[str, Any]:
    """``data`` with its seal: the digest of the rest and, with ``signer``, a DSSE envelope over an
    in-toto Statement of that digest. The signer's key id goes into the sealed content too, so a
    signature removed later is seen without the public key."""
    data = {k: v for k, v in data.items() if k != "seal"}
    if signer is not None:
        data["signer"] = {"keyid": signer.keyid, "name": signer.name}
    data["seal"] = _seal_of(data)
    if signer is not None:
        from auditor.record.signing import DOSSIER_PREDICATE, statement

        predicate = {"run": data.get("run"), "kind": data.get("kind"), "total_flops": data.get("total_flops"),
                     "ledger_head": ledger_head(data)}
        data["seal"]["signature"] = signer.sign(statement(DOSSIER_NAME, data["seal"]["digest"], DOSSIER_PREDICATE,
                                                          predicate))
    return data


def write(data: dict[str, Any], path: str | Path) -> Path:
    """Atomically: a crash leaves the old dossier or the new one, never half of one."""
    return write_atomic(path, canonical(data))


def locate(target: str | Path) -> Path:
    target = Path(target)
    return target / DOSSIER_NAME if target.is_dir() else target


def load(target: str | Path) -> dict[str, Any]:
    """Read and verify; DossierError(tampered=True) says what differs."""
    path = locate(target)
    try:
        raw = read_regular(path, MAX_BYTES)
    except (OSError, FileRefused) as exc:
        raise DossierError(f"{path}: cannot read the dossier: {describe(exc)}") from None
    try:
        data = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DossierError(f"{path}: not a valid dossier (not ASCII JSON: {exc}); altered or not a dossier",
                           tampered=True) from None
    if not isinstance(data, dict) or not isinstance(data.get("seal"), dict):
        raise DossierError(f"{path}: no seal: not a dossier, or its seal was removed", tampered=True)
    stored = {k: v for k, v in data["seal"].items() if k != "signature"}
    expected = _seal_of(data)
    if stored.get("digest") != expected["digest"]:
        raise DossierError(f"{path}: tampered: the content's SHA-256 is {expected['digest'][:16]}..., the seal says "
                           f"{str(stored.get('digest'))[:16]}...", tampered=True)
    if stored != expected:  # the algorithm, or a ledger head that differs from the sealed content's
        differs = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        raise DossierError(f"{path}: tampered: the seal's {', '.join(differs)} do not match its content",
                           tampered=True)
    if "signer" in data and "signature" not in data["seal"]:
        raise DossierError(f"{path}: tampered: the dossier names its signer but its signature was removed",
                           tampered=True)
    if raw != canonical(data):
        expected = canonical(data)
        where = next((i for i, (a, b) in enumerate(zip(raw, expected)) if a != b), min(len(raw), len(expected)))
        raise DossierError(f"{path}: tampered: the bytes differ from the sealed content's canonical form at byte "
                           f"{where}", tampered=True)
    return data
