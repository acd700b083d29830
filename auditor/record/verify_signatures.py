"""verify's third layer (docs/security.md): the ledger's and the dossier's signatures by a key the
reviewer trusts, and the authorization a run held (its bytes, its signer, its budget against the
ledger's use)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from auditor.files import FileRefused, read_regular
from auditor.record.authorization import RUN_COPY, AuthorizationError, used_flops, verified
from auditor.record.ledger import SIGNATURE_FILENAME
from auditor.record.signing import open_envelope, short_id, subject_digest
from auditor.record.verify_scan import Findings, LedgerScan
from auditor.text import sci


def check_authorization(found: Findings, ledger_file: Path, scan: LedgerScan, trusted, data: dict | None) -> None:
    """A run that held an authorization: its bytes beside the ledger are the ones the ledger names,
    signed by a trusted key where keys are given, approving the budget the ledger records; the
    ledger's use of the phases it covers is within it; a dossier shows the same."""
    held, where = scan.authorization, ledger_file.with_name(RUN_COPY)
    try:
        budget, phases, digest = int(held["budget_flops"]), [str(p) for p in held["phases"]], str(held["sha256"])
    except (KeyError, TypeError, ValueError):
        found.bad(f"{ledger_file}: its record of the run's authorization is malformed")
        return
    train = scan.last["total"] if scan.last else 0
    used = used_flops(scan.sums.by_phase(train), phases)
    if where.is_file():
        try:
            raw = read_regular(where, 1_000_000)
        except (OSError, FileRefused) as exc:
            found.bad(f"{where}: cannot read the run's authorization: {exc}")
            return
        if hashlib.sha256(raw).hexdigest() != digest:
            found.bad(f"{where}: not the authorization the ledger names (sha256 {digest[:16]}...): replaced or edited")
            return
        if trusted:
            try:
                auth = verified(raw, where, trusted)
            except AuthorizationError as exc:
                found.bad(f"the run's authorization cannot be trusted: {exc}")
                return
            if auth.budget_flops != budget:
                found.bad(f"{where}: approves {auth.budget_flops:,} FLOPs but the ledger records a budget of {budget:,}")
                return
            found.say(f"{where}: signed by {auth.approver.name} (trusted), approving {sci(budget)} FLOP")
    elif trusted:
        found.bad(f"{ledger_file}: the run held an authorization (sha256 {digest[:16]}...) whose file "
                  f"{RUN_COPY} is missing beside the ledger: who approved it cannot be checked")
        return
    if used > budget:
        found.bad(f"{ledger_file}: the run used {used:,} FLOPs ({' + '.join(phases)}), over the {budget:,} its "
                  f"authorization approved (sha256 {digest[:16]}...)")
    else:
        found.say(f"{ledger_file}: within its authorization: {used:,} of {budget:,} FLOPs approved "
                  f"({used / budget:.1%}; {' + '.join(phases)})")
    tracked = data.get("tracked") if isinstance(data, dict) else None
    if isinstance(tracked, dict):
        shown = tracked.get("authorization")
        if not isinstance(shown, dict) or shown.get("sha256") != digest or shown.get("budget_flops") != budget:
            found.bad(f"the dossier does not show the authorization the ledger names (sha256 {digest[:16]}..., "
                      f"budget {budget:,})")


def read_envelope(path: Path | None, found: Findings) -> Any:
    if path is None or not path.exists():
        return None
    try:
        return json.loads(read_regular(path, 1_000_000))
    except (OSError, FileRefused, ValueError, RecursionError) as exc:
        found.bad(f"{path}: not a readable signature file ({type(exc).__name__}): damaged or replaced")
        return None


def check_ledger_signature(found: Findings, ledger_file: Path, scan: LedgerScan, envelope, opened,
                            trusted, result) -> None:
    sidecar = ledger_file.with_name(SIGNATURE_FILENAME)
    if envelope is None:
        if sidecar.exists():
            return                       # unreadable: already reported
        if scan.signers:
            found.bad(f"{ledger_file}: the ledger names its signer ({', '.join(sorted(map(short_id, scan.signers)))}) "
                      f"but {SIGNATURE_FILENAME} is missing: the signature was removed")
        elif trusted:
            found.bad(f"{ledger_file}: unsigned: no {SIGNATURE_FILENAME}, so nothing ties it to a trusted key")
        return
    if opened.statement is None:
        found.bad(f"{sidecar}: {opened.problem}")
        return
    pred = opened.statement.get("predicate") or {}
    names = _signer_names(opened)
    if opened.problem:
        found.bad(f"{sidecar}: {opened.problem}")
        return
    if not scan.signed_found:
        found.bad(f"{sidecar}: the signed head (seq {pred.get('seq')}, {str(pred.get('head'))[:16]}...) is not a "
                  f"record of the ledger: the ledger was rewritten after it was signed")
        return
    if subject_digest(opened.statement) != scan.signed_digest:
        found.bad(f"{sidecar}: the signed digest of the ledger's bytes does not match them")
        return
    last_seq = scan.last["seq"] if scan.last else -1
    unsigned = last_seq - pred["seq"]
    signed = f"head seq {pred['seq']} ({pred.get('total', 0):,} FLOPs)"
    if not trusted:
        found.say(f"{ledger_file}: carries a signature by {names} over {signed}; not checked (pass --trusted-key)")
    elif unsigned > 0:
        found.bad(f"{ledger_file}: signed by {names} through {signed}, but records seq {pred['seq'] + 1}..{last_seq} "
                  f"after it are not covered by a signature (written after the last signed flush, by a crash "
                  f"before it, or appended by someone without the key)")
    else:
        found.say(f"{ledger_file}: signed by {names}: {signed}, every record covered")
    if not trusted and unsigned > 0:
        found.say(f"{ledger_file}: records seq {pred['seq'] + 1}..{last_seq} come after the last signed head")


def check_dossier_signature(found: Findings, path: Path, data: dict, trusted) -> None:
    envelope = data["seal"].get("signature")
    if envelope is None:
        if trusted:
            found.bad(f"{path}: unsigned: no signature by a trusted key")
        return
    opened = open_envelope(envelope, trusted)
    if opened.statement is None or opened.problem:
        found.bad(f"{path}: signature: {opened.problem}")
        return
    if subject_digest(opened.statement) != data["seal"]["digest"]:
        found.bad(f"{path}: the signature is over another dossier (its digest is not this one's)")
        return
    names = _signer_names(opened)
    if trusted:
        found.say(f"{path}: signed by {names}")
    else:
        found.say(f"{path}: carries a signature by {names}; not checked (pass --trusted-key)")


def _signer_names(opened) -> str:
    """Who signed an opened envelope: trusted keys by name, else their key ids."""
    return ", ".join(f"{k.name} ({short_id(k.keyid)})" for k in opened.signers) or ", ".join(map(short_id, opened.keyids))
