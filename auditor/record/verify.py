"""`auditor verify`: a run's ledger chain and sealed dossier, their signatures, and that they agree.

Four layers, each saying what it proves (docs/security.md):

1. bytes: the ledger's hash chain and the dossier's seal (any change by accident is caught);
2. meaning: the dossier's totals, steps and series are the ledger's, at the head it seals; a
   tracked dossier needs its ledger; a dossier older than its ledger (a resumed run) is stale,
   not forged;
3. signatures, with ``--trusted-key``: the ledger's head and the dossier are signed by a key the
   reviewer trusts (DSSE envelopes, auditor/signing.py), every record is covered;
4. form: a dossier verify accepts is one ``auditor report`` can render.

Layer 3 is verify_signatures.py; what the layers share (Findings, the LedgerScan) is verify_scan.py.
Without a trusted key, (1) and (2) hold against accident only: whoever can edit the files can
recompute every hash, and the output says so.
"""
from __future__ import annotations

import json
from pathlib import Path

from auditor.files import FileRefused, kind_of, read_regular
from auditor.record import dossier
from auditor.record.ledger import (
    FILENAME,
    SIGNATURE_FILENAME,
    check_ledger,
    check_record,
)
from auditor.record.run_facts import check_against_ledger
from auditor.record.series import mismatch
from auditor.record.signing import open_envelope
from auditor.record.verify_scan import Findings, LedgerScan
from auditor.record.verify_signatures import (
    check_authorization,
    check_dossier_signature,
    check_ledger_signature,
    read_envelope,
)
from auditor.text import printable

__all__ = ["Findings", "LedgerScan", "UNSIGNED_NOTE", "check", "verify_target"]

UNSIGNED_NOTE = ("note: no --trusted-key given: this proves integrity against accident only; whoever can edit "
                 "these files can recompute every hash (docs/security.md)")


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
    envelope, opened = read_envelope(sidecar, found), None
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
        check_ledger_signature(found, ledger_file, scan, envelope, opened, trusted, ledger_result)
        if ledger_result.ok and scan.authorization is not None:
            check_authorization(found, ledger_file, scan, trusted, data)
    if data is not None:
        found.dossier = data
        found.say(f"{dossier_file}: intact, seal {data['seal']['digest']}")
        check_dossier_signature(found, dossier_file, data, trusted)
        if data.get("kind") == "tracked" or dossier.ledger_head(data):
            _check_meaning(found, dossier_file, data, ledger_file if has_ledger else None, scan,
                           ledger_ok=ledger_result is not None and ledger_result.ok)
        if found.code == 0:              # only what verify accepts must render
            _check_renders(found, dossier_file, data)
    if not trusted:
        found.say(UNSIGNED_NOTE)
    return found


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
    wrong += check_against_ledger(tracked, figures)  # started, ended, resumes (record/run_facts.py)
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
