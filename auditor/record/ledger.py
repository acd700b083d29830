"""The run ledger's format: ``RUN_DIR/ledger.jsonl``, one canonical JSON record a line, each
chained to the one before by SHA-256 (docs/ledger.md); reading it, with the torn tail a crash
leaves set apart, and verifying it. Standard library only (no torch).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from auditor.text import sci

FILENAME = "ledger.jsonl"


SIGNATURE_FILENAME = "ledger.head.dsse.json"   # a DSSE envelope over the latest flushed head (signing.py)


ZERO = "0" * 64


KINDS = ("start", "interval", "resume", "close")


REQUIRED = {"seq": int, "time": str, "step": int, "flops": int, "total": int, "kind": str, "prev": str, "hash": str}


EXTRA_INTS = {"eval_flops": 0, "recompute_flops": 0, "ranks": 1, "hardware_flops": 0}  # optional ints, minimum


FIELDS = {**REQUIRED, **dict.fromkeys(EXTRA_INTS, int), "meta": dict, "phases": dict}


MAX_META = 4096  # bytes of canonical JSON
# A per-record ``phases`` mapping: each tagged phase's FLOPs in the interval (train is ``flops``,
# eval ``eval_flops``); names as ComputeAudit.phase and rule files' counts_phases take them.
PHASE_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_PHASES = 64


def phases_problem(phases) -> str | None:
    """Why a record's ``phases`` mapping is not {phase name: int >= 0}, or None."""
    if len(phases) > MAX_PHASES:
        return f"more than {MAX_PHASES} phases"
    for name, value in phases.items():
        if not PHASE_RE.match(name) or name in ("train", "eval"):
            return f"phases: {name[:40]!r} is not a tagged phase's name (train and eval have their own fields)"
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"phases: {name!r} is not an int >= 0"
    return None


class LedgerError(Exception):
    """A ledger that cannot be used: a bad record (``seq``, ``line``, ``reason``), or misuse."""
    def __init__(self, message: str, *, seq=None, line=None, reason=None, state=None):
        super().__init__(message)
        self.seq, self.line, self.reason, self.state = seq, line, reason or message, state


def canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def record_hash(record: dict) -> str:
    """SHA-256 (hex) of the canonical record without its ``hash`` field."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _time(record: dict) -> datetime:
    return datetime.fromisoformat(record["time"].replace("Z", "+00:00"))


def check_record(rec, raw: bytes, last: dict | None) -> str | None:
    """Why the line ``raw`` (with its newline) is not a valid successor of ``last``; None if it is."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for key, typ in FIELDS.items():
        if key not in rec:
            if key in REQUIRED:
                return f"missing field {key!r}"
        elif not isinstance(rec[key], typ) or isinstance(rec[key], bool):
            return f"field {key!r} is not {typ.__name__}"
    try:
        computed = record_hash(rec)
        if computed != rec["hash"]:
            return f"hash mismatch (recorded {rec['hash'][:16]}..., computed {computed[:16]}...)"
        if canonical(rec) + b"\n" != raw:
            return "not in canonical form (its bytes differ from the canonical JSON of its content)"
        datetime.fromisoformat(rec["time"])
    except (ValueError, TypeError):
        return "not in canonical form, or a bad time"
    seq, prev, base = (0, ZERO, 0) if last is None else (last["seq"] + 1, last["hash"], last["total"])
    kind, step = rec["kind"], rec["step"]
    if "phases" in rec and (problem := phases_problem(rec["phases"])):
        return problem
    problems = (
        (rec["seq"] != seq, f"seq gap: expected {seq}, found {rec['seq']}"),
        (rec["prev"] != prev, f"prev mismatch: does not chain to the previous record ({prev[:16]}...)"),
        (kind not in KINDS, f"unknown kind {kind!r}"),
        ((kind == "start") != (last is None), "a start record comes first, and only first"),
        (last is not None and last["kind"] == "close" and kind != "resume", "a record after close, not a resume"),
        (min(rec["flops"], rec.get("eval_flops", 0), rec.get("recompute_flops", 0), rec.get("hardware_flops", 0)) < 0,
         "negative flops"),
        (kind in ("start", "resume", "close") and (rec["flops"] or rec.get("eval_flops") or rec.get("recompute_flops")
                                                   or rec.get("hardware_flops") or rec.get("phases")),
         f"a {kind} record carries FLOPs (only interval records do)"),
        (last is not None and _time(rec) < _time(last),
         f"time goes backwards ({rec['time']} after {(last or {}).get('time')})"),
        (rec.get("ranks", 1) < 1, "ranks < 1"),
        (rec["total"] != base + rec["flops"], f"total {rec['total']} != previous total {base} + flops {rec['flops']}"),
        (step < 0 or (last is not None and step < last["step"]), f"step goes backwards or below 0 ({step})"),
    )
    return next((reason for bad, reason in problems if bad), None)


@dataclass
class LedgerState:
    """What ``read_ledger`` found: the valid chain, and the torn tail set apart (never parsed as data)."""
    path: Path
    records: list[dict] = field(default_factory=list)   # the valid records (left empty when streaming)
    count: int = 0
    last: dict | None = None
    end: int = 0                    # byte offset just past the last valid record
    torn: bytes | None = None       # the unfinished or unverifiable last line, as found
    torn_line: int | None = None
    torn_reason: str | None = None
    torn_damaged: bool = False      # a whole line that fails to verify: not what a crash leaves

    total = property(lambda self: self.last["total"] if self.last else 0)
    head = property(lambda self: self.last["hash"] if self.last else ZERO)
    step = property(lambda self: self.last["step"] if self.last else None)
    closed = property(lambda self: bool(self.last) and self.last["kind"] == "close")


def ledger_path(path) -> Path:
    return Path(path) / FILENAME if Path(path).is_dir() else Path(path)


def _read(path: Path, keep: bool = True, cut_step: int | None = None, visit=None):
    """Scan line by line; also (end, record) of the last valid record with step <= cut_step.
    ``visit(record)`` is called on each valid record (a streaming reader keeps none)."""
    st, cut = LedgerState(path), (0, None)
    with open(path, "rb") as fh:
        line, lineno = fh.readline(), 0
        while line:
            nxt, lineno = fh.readline(), lineno + 1
            if not line.endswith(b"\n"):   # only a last line can lack its newline
                st.torn, st.torn_line, st.torn_reason = line, lineno, "unfinished last line (no newline)"
                with contextlib.suppress(ValueError):  # a whole record then a stray byte: damage, not a crash
                    obj, stop = json.JSONDecoder().raw_decode(line.decode("latin-1"))
                    if isinstance(obj, dict) and stop < len(line):
                        st.torn_damaged, st.torn_reason = True, "stray bytes after a record in place of its newline"
                break
            try:
                rec = json.loads(line)
                reason = check_record(rec, line, st.last)
            except (ValueError, RecursionError):
                reason = "bad JSON"
            if reason is not None and not nxt:
                st.torn, st.torn_line, st.torn_reason, st.torn_damaged = line, lineno, reason, True
                break
            if reason is not None:
                raise LedgerError(f"{path} line {lineno} (record seq {st.count}): {reason}",
                                  seq=st.count, line=lineno, reason=reason, state=st)
            st.count, st.last, st.end = st.count + 1, rec, st.end + len(line)
            if keep:
                st.records.append(rec)
            if visit is not None:
                visit(rec)
            if cut_step is not None and rec["step"] <= cut_step:
                cut = (st.end, rec)
            line = nxt
    return st, cut


def read_ledger(path) -> LedgerState:
    """The valid records and the torn tail of a ledger (file or RUN_DIR); LedgerError names a bad record."""
    return _read(ledger_path(path))[0]


@dataclass
class Sums:
    """Running sums of a ledger's optional figures: evaluation, recomputation, the training calls'
    hardware work (``hardware_flops``, else the interval's ``flops``) and each tagged phase."""
    eval: int = 0
    recompute: int = 0
    hardware: int = 0
    phases: dict = field(default_factory=dict)

    def add(self, rec: dict) -> None:
        self.eval += rec.get("eval_flops", 0)
        self.recompute += rec.get("recompute_flops", 0)
        self.hardware += rec.get("hardware_flops", rec["flops"])
        for name, value in (rec.get("phases") or {}).items():
            self.phases[name] = self.phases.get(name, 0) + value

    def copy(self) -> "Sums":
        return Sums(self.eval, self.recompute, self.hardware, dict(self.phases))

    def by_phase(self, train: int) -> dict[str, int]:
        """train, eval and every tagged phase with FLOPs: a dossier's tracked.flops_by_phase."""
        return {"train": train, "eval": self.eval, **{k: v for k, v in sorted(self.phases.items()) if v}}


BadRecord = namedtuple("BadRecord", "seq line reason")  # the first bad record: its seq, line number, why


@dataclass
class VerifyResult:
    path: Path
    ok: bool
    records: int = 0
    total: int = 0
    head: str = ZERO
    step: int | None = None
    closed: bool = False
    torn: bool = False          # a torn tail is present (ok only in an open, crashed ledger)
    torn_bytes: int = 0
    bad: BadRecord | None = None

    def summary(self) -> str:
        if (bad := self.bad) is not None:
            return f"{self.path}: TAMPERED or damaged at line {bad.line} (record seq {bad.seq}): {bad.reason}"
        if not self.records:
            return f"{self.path}: no records" + (f" (only a torn tail of {self.torn_bytes} bytes)" if self.torn else "")
        state = f"closed at step {self.step:,}" if self.closed else f"open (not closed), last step {self.step:,}"
        tail = f"; a torn last line of {self.torn_bytes} bytes from a crash, set aside on resume" if self.torn else ""
        return (f"{self.path}: intact, {self.records:,} records, {state}, total {self.total:,} FLOPs "
                f"({sci(self.total)}), head {self.head}{tail}")


def verify_ledger(path, visit=None) -> VerifyResult:
    """Check the chain: a closed ledger must end cleanly, an open (crashed) one may end in a torn tail.
    ``visit(record)``: called on each valid record, in order."""
    path = ledger_path(path)
    try:
        st, bad = _read(path, keep=False, visit=visit)[0], None
    except LedgerError as exc:
        st, bad = exc.state, BadRecord(exc.seq, exc.line, exc.reason)
    if st.torn is not None and (st.torn_damaged or st.closed):
        bad = BadRecord(st.count, st.torn_line, st.torn_reason if st.torn_damaged
                        else f"bytes after the close record ({st.torn_reason})")
    return VerifyResult(path, bad is None and st.count > 0, st.count, st.total, st.head, st.step, st.closed,
                        st.torn is not None, len(st.torn or b""), bad)


def check_ledger(path, visit=None) -> tuple[int, str, VerifyResult | None]:
    """(exit code, one line, result) for ``auditor verify`` (``path``: a RUN_DIR or the ledger file):
    0 intact or 1 tampered/damaged with the summary; 2 with an ``error:`` line when missing,
    unreadable, empty or not a ledger. ``visit``: as verify_ledger's."""
    target = ledger_path(path)
    try:
        if not target.is_file():
            raise ValueError(f"{path} holds no {FILENAME}" if Path(path).is_dir() else
                             f"{path} is not a regular file" if target.exists() else f"{path} does not exist")
        result = verify_ledger(target, visit)
        if not result.ok and not any(m in target.read_bytes() for m in (b'"prev":"', b'"hash":"', b'"total":')):
            raise ValueError(f"{target}: not an auditor ledger")  # one changed byte cannot remove all three
        if result.bad is None and not result.records:
            raise ValueError(result.summary())
    except (OSError, ValueError) as exc:
        return 2, f"error: {f'{target}: {exc.strerror}' if isinstance(exc, OSError) else exc}", None
    return (0 if result.ok else 1), result.summary(), result
