"""`auditor verify`: a run's ledger chain and sealed dossier, their signatures, and that they agree.

Four layers, each saying what it proves (docs/security.md):

1. bytes: the ledger's hash chain and the dossier's seal (any change by accident is caught);
2. meaning: the dossier's totals, steps and series are the ledger's, at the head it seals; a
   tracked dossier needs its ledger; a dossier older than its ledger (a resumed run) is stale,
   not forged;
3. signatures, with ``--trusted-key``: the ledger's head and the dossier are signed by a key the
   reviewer trusts (DSSE envelopes, auditor/signing.py), every record is covered;
4. form: a dossier verify accepts is one ``auditor report`` can render.

Without a trusted key, (1) and (2) hold against accident only: whoever can edit the files can
recompute every hash, and the output says so.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.files import FileRefused, kind_of, read_regular
from auditor.record import dossier
from auditor.record.authorization import RUN_COPY, AuthorizationError, named_by, verified
from auditor.record.ledger import (
    FILENAME,
    SIGNATURE_FILENAME,
    Sums,
    canonical,
    check_ledger,
    check_record,
)
from auditor.record.series import mismatch
from auditor.record.signing import open_envelope, short_id, subject_digest
from auditor.text import printable, sci

UNSIGNED_NOTE = ("note: no --trusted-key given: this proves integrity against accident only; whoever can edit "
                 "these files can recompute every hash (docs/security.md)")


@dataclass
class Findings:
    """What verify says: lines for stdout or stderr, the problems among them, and the exit code."""
    code: int = 0
    lines: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dossier: dict | None = None          # the dossier verify read (None where there is none or it failed)
    ledger: Any = None                   # the ledger's VerifyResult, where there is a ledger

    def say(self, line: str) -> None:
        self.lines.append(("out", line))

    def bad(self, line: str) -> None:
        self.lines.append(("out", line))
        self.problems.append(line)
        self.code = max(self.code, 1)

    def error(self, line: str) -> "Findings":
        """Unreadable, or nothing to verify: exit 2 with this one line."""
        self.code, self.lines, self.problems = 2, [("err", line)], [line]
        return self


@dataclass
class LedgerScan:
    """What one streaming pass over the ledger keeps: the figures at the points verify compares."""
    want_head: str | None = None          # the dossier's sealed head
    want_signed: tuple[int, str] | None = None   # (seq, hash) the signature file names
    series: list[tuple[int, int]] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)  # indices in ``series`` of the resume records
    sums: Sums = field(default_factory=Sums)  # evaluation, recomputation, hardware work, phases: running sums
    at_head: dict | None = None           # count, step, total and sums at the sealed head
    signed_digest: str | None = None      # SHA-256 of the ledger's bytes through the signed record
    signed_found: bool = False
    signers: set = field(default_factory=set)   # key ids the start/resume records name
    authorization: dict | None = None     # what the latest start/resume record says of the run's authorization
    resumes: list[dict] = field(default_factory=list)
    last: dict | None = None
    _digest: Any = field(default_factory=hashlib.sha256)

    def visit(self, rec: dict) -> None:
        index = len(self.series)
        if rec["kind"] == "resume":      # a cut: the figures just before it, and what it set aside
            self.resumes.append({"index": index, "cut": self.last, "sums": self.sums.copy(),
                                 "file": (rec.get("meta") or {}).get("rolled_back_file")})
            self.cuts.append(index)
        signer = (rec.get("meta") or {}).get("signer") if rec["kind"] in ("start", "resume") else None
        if isinstance(signer, str):
            self.signers.add(signer)
        if (named := named_by(rec)) is not None:
            self.authorization = named
        self.sums.add(rec)
        self.series.append((rec["step"], rec["total"]))
        self._digest.update(canonical(rec) + b"\n")
        if rec["hash"] == self.want_head:
            self.at_head = {"count": index + 1, "step": rec["step"], "total": rec["total"],
                            "sums": self.sums.copy()}
        if self.want_signed == (rec["seq"], rec["hash"]):
            self.signed_found, self.signed_digest = True, self._digest.hexdigest()
        self.last = rec


def verify_target(target: Path, trusted_keys=()) -> tuple[int, list[tuple[str, str]]]:
    """(exit code, [(stream, line)]): 0 intact, 1 tampered, 2 unreadable or nothing to verify.

    ``trusted_keys``: signing.TrustedKey objects; with any, every record must be signed by one."""
    found = check(target, trusted_keys)
    return found.code, found.lines


def check(target: Path, trusted_keys=(), visit=None) -> Findings:
    """verify_target's findings, with the problems listed apart. ``visit(record)``: called on each
    valid ledger record in the same pass that verifies it (the registry reads a run this way, so
    that what it records is what was verified, not a second read of files that may have changed)."""
    target, trusted, found = Path(target), list(trusted_keys), Findings()
    unreadable = _unreadable(target)
    if unreadable:
        return found.error(unreadable)
    dossier_file = dossier.locate(target) if target.is_dir() or target.suffix == ".json" else None
    has_dossier = dossier_file is not None and dossier_file.is_file()
    data = None
    if has_dossier:
        try:
            data = dossier.load(dossier_file)
        except dossier.DossierError as exc:
            if not exc.tampered:
                return found.error(f"error: {exc}")
            found.bad(str(exc))
    ledger_file = _ledger_of(target, dossier_file if data is not None else None, data)
    has_ledger = ledger_file is not None and ledger_file.is_file()
    if not has_ledger and not has_dossier:
        return found.error(f"error: {printable(target)}: no {FILENAME} or {dossier.DOSSIER_NAME} to verify")

    scan = LedgerScan(want_head=dossier.ledger_head(data) if data else None)
    sidecar = ledger_file.with_name(SIGNATURE_FILENAME) if has_ledger else None
    envelope, opened = _read_envelope(sidecar, found), None
    if envelope is not None:
        opened = open_envelope(envelope, trusted)
        pred = (opened.statement or {}).get("predicate") or {}
        if isinstance(pred.get("seq"), int) and isinstance(pred.get("head"), str):
            scan.want_signed = (pred["seq"], pred["head"])
    ledger_result = None
    if has_ledger:
        code, line, ledger_result = check_ledger(ledger_file, scan.visit if visit is None else
                                                 lambda rec: (scan.visit(rec), visit(rec)))
        found.ledger = ledger_result
        if code == 2:
            return found.error(line)
        (found.bad if code else found.say)(line)
        _check_ledger_signature(found, ledger_file, scan, envelope, opened, trusted, ledger_result)
        if ledger_result.ok and scan.authorization is not None:
            _check_authorization(found, ledger_file, scan, trusted, data)
    if data is not None:
        found.dossier = data
        found.say(f"{dossier_file}: intact, seal {data['seal']['digest']}")
        _check_dossier_signature(found, dossier_file, data, trusted)
        if data.get("kind") == "tracked" or dossier.ledger_head(data):
            _check_meaning(found, dossier_file, data, ledger_file if has_ledger else None, scan,
                           ledger_ok=ledger_result is not None and ledger_result.ok)
        if found.code == 0:              # only what verify accepts must render
            _check_renders(found, dossier_file, data)
    if not trusted:
        found.say(UNSIGNED_NOTE)
    return found


def _check_authorization(found: Findings, ledger_file: Path, scan: LedgerScan, trusted, data: dict | None) -> None:
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
    by_phase = scan.sums.by_phase(train)
    used = sum(by_phase.get(p, 0) for p in phases)
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


def _unreadable(target: Path) -> str | None:
    """The error line for a target that cannot be read at all: missing, or a special file where
    the dossier or ledger should be (a FIFO would block the read)."""
    if not target.exists():
        return f"error: {printable(target)} does not exist"
    dossier_file = dossier.locate(target) if target.is_dir() or target.suffix == ".json" else None
    for path in (dossier_file, target / FILENAME if target.is_dir() else target):
        if path is not None and path.exists() and not path.is_dir() and kind_of(path):
            return f"error: {printable(path)}: {kind_of(path)}"
    return None


def _ledger_of(target: Path, dossier_file: Path | None, data: dict | None) -> Path | None:
    """The ledger to check: RUN_DIR/ledger.jsonl, the .jsonl given, or the one a dossier file
    names beside it (its base name only: a dossier cannot point verify elsewhere)."""
    if target.is_dir():
        return target / FILENAME
    if target.name.endswith(".jsonl"):
        return target
    if dossier_file is not None and data is not None:
        named = ((data.get("tracked") or {}).get("ledger") or {}).get("path") if isinstance(data.get("tracked"), dict) \
            else None
        return dossier_file.parent / Path(named if isinstance(named, str) and named else FILENAME).name
    return None


def _read_envelope(path: Path | None, found: Findings) -> Any:
    if path is None or not path.exists():
        return None
    try:
        return json.loads(read_regular(path, 1_000_000))
    except (OSError, FileRefused, ValueError, RecursionError) as exc:
        found.bad(f"{path}: not a readable signature file ({type(exc).__name__}): damaged or replaced")
        return None


def _check_ledger_signature(found: Findings, ledger_file: Path, scan: LedgerScan, envelope, opened,
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
    names = ", ".join(f"{k.name} ({short_id(k.keyid)})" for k in opened.signers) or \
        ", ".join(map(short_id, opened.keyids))
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


def _check_dossier_signature(found: Findings, path: Path, data: dict, trusted) -> None:
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
    names = ", ".join(f"{k.name} ({short_id(k.keyid)})" for k in opened.signers) or \
        ", ".join(map(short_id, opened.keyids))
    if trusted:
        found.say(f"{path}: signed by {names}")
    else:
        found.say(f"{path}: carries a signature by {names}; not checked (pass --trusted-key)")


def _check_meaning(found: Findings, path: Path, data: dict, ledger_file: Path | None, scan: LedgerScan,
                   ledger_ok: bool) -> None:
    """The dossier's figures against the ledger's, at the head the dossier seals."""
    head = dossier.ledger_head(data)
    if head is None:
        found.bad(f"{path}: a tracked dossier that names no ledger head: its figures cannot be traced to a ledger")
        return
    if ledger_file is None:
        found.bad(f"{path}: the dossier seals ledger head {head[:16]}..., but its ledger is missing: "
                  f"its figures cannot be checked")
        return
    if not ledger_ok:
        return                           # the chain is already reported as broken
    figures, series, rolled_into = scan.at_head, scan.series, None
    cuts = scan.cuts
    if figures is None:                   # sealed before a resume rolled its records back?
        figures, series, rolled_into = _in_rolled_back(ledger_file, scan, head)
        cuts = (figures or {}).get("cuts", [])
        if figures is None:
            found.bad(f"{path}: the dossier seals ledger head {head[:16]}..., which is neither in the ledger nor in "
                      f"a part of it rolled back by a resume: they do not match")
            return
    where = f"the rolled-back records in {rolled_into}" if rolled_into else "the ledger"
    tracked = data.get("tracked") if isinstance(data.get("tracked"), dict) else {}
    ledger_meta = tracked.get("ledger") if isinstance(tracked.get("ledger"), dict) else {}
    count = figures["count"]
    checks = [("total_flops", data.get("total_flops"), figures["total"]),
              ("tracked.steps", tracked.get("steps"), figures["step"]),
              ("tracked.ledger.records", ledger_meta.get("records"), count),
              ("tracked.eval_flops", tracked.get("eval_flops"), figures["sums"].eval),
              ("tracked.recompute_flops", tracked.get("recompute_flops"), figures["sums"].recompute)]
    wrong = [f"{name} is {printable(said)} but {where} says {actual:,} at the head the dossier seals"
             for name, said, actual in checks if said != actual]
    sums = figures["sums"]
    # Optional figures (dossiers before phases and hardware work were recorded lack them): each, where
    # present, must be the ledger's.
    if "hardware_flops" in tracked and tracked["hardware_flops"] != sums.hardware:
        wrong.append(f"tracked.hardware_flops is {printable(tracked['hardware_flops'])} but {where} says "
                     f"{sums.hardware:,} at the head the dossier seals")
    if "flops_by_phase" in tracked:
        said, actual = tracked["flops_by_phase"], sums.by_phase(figures["total"])
        if not isinstance(said, dict) or said != actual:
            names = sorted(set(said) | set(actual)) if isinstance(said, dict) else ["(not a mapping)"]
            differs = [n for n in names if not isinstance(said, dict) or said.get(n) != actual.get(n)]
            wrong.append(f"tracked.flops_by_phase differs from {where} at the head the dossier seals, for "
                         + ", ".join(f"{printable(n)} ({printable(said.get(n) if isinstance(said, dict) else said)} "
                                     f"vs {actual.get(n, 0):,})" for n in differs[:5]))
    if (problem := mismatch(tracked.get("series"), series[:count], cuts, data.get("verdicts"))) is not None:
        wrong.append(f"tracked.series differs from {where}'s records {problem}")
    for problem in wrong:
        found.bad(f"{path}: {problem}")
    if wrong:
        return
    now = scan.series[-1] if scan.series else (0, 0)
    if rolled_into:
        found.say(f"{path}: stale: the run was resumed from an earlier checkpoint after this dossier; the records it "
                  f"seals were rolled back into {rolled_into} (the ledger now stands at {now[1]:,} FLOPs)")
    elif count < len(scan.series):
        found.say(f"{path}: stale: the ledger was extended after this dossier ({len(scan.series) - count} more "
                  f"records, to {now[1]:,} FLOPs at step {now[0]:,}: a resumed run that has not closed again)")
    else:
        found.say(f"{path}: agrees with the ledger: {figures['total']:,} FLOPs over {figures['step']:,} steps, "
                  f"{count:,} records")


def _in_rolled_back(ledger_file: Path, scan: LedgerScan, head: str):
    """(figures, series, where) for a head found in a rolled-back part of the ledger, chained from
    the record the resume cut at; (None, None, None) when it is not there or does not chain."""
    for resume in reversed(scan.resumes):
        name = resume["file"]
        if not isinstance(name, str) or resume["cut"] is None:
            continue
        try:
            raw = read_regular(ledger_file.with_name(Path(name).name), 1 << 31)
        except (OSError, FileRefused):
            continue
        last, series = resume["cut"], [list(p) for p in scan.series[:resume["index"]]]
        sums, cuts = resume["sums"].copy(), [c for c in scan.cuts if c < resume["index"]]
        for line in raw.splitlines(keepends=True):
            try:
                rec = json.loads(line)
            except ValueError:
                break
            if check_record(rec, line, last) is not None:
                break
            last = rec
            sums.add(rec)
            if rec["kind"] == "resume":
                cuts.append(len(series))
            series.append([rec["step"], rec["total"]])
            if rec["hash"] == head:
                return ({"count": len(series), "step": rec["step"], "total": rec["total"], "sums": sums.copy(),
                         "cuts": cuts}, series, Path(name).name)
    return None, None, None


def _check_renders(found: Findings, path: Path, data: dict) -> None:
    """A dossier verify accepts is one report renders: each view is tried, and a failure named."""
    from auditor.report.views import dossier_html, dossier_markdown, dossier_text

    for view, render in (("text", dossier_text), ("Markdown", dossier_markdown), ("HTML", dossier_html)):
        try:
            render(data)
        except Exception as exc:           # any shape the renderers do not expect
            found.bad(f"{path}: not a well-formed dossier: its {view} view cannot be made "
                      f"({type(exc).__name__}: {printable(str(exc))[:120]})")
            return
