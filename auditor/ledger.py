"""The run ledger: ``RUN_DIR/ledger.jsonl``, append-only, hash-chained, resumable (docs/ledger.md).

Each flush is one ``os.write`` on an O_APPEND descriptor, then fsync, so a crash leaves at most one
unfinished last line: the torn tail, set aside, never data. Standard library only (no torch)."""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import json
import operator
import os
import re
import sys
import threading
import time
import warnings
import weakref
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

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
                f"({self.total:.3e}), head {self.head}{tail}")


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


def verify_run(path, *, out=None, err=None) -> int:
    """check_ledger, printed: the summary on ``out``, or the ``error:`` line on ``err``."""
    code, line, _ = check_ledger(path)
    print(line, file=(err or sys.stderr) if code == 2 else (out or sys.stdout))
    return code


def _set_aside(path: Path, kind: str, data: bytes) -> str:
    """Write ``data`` durably to the first free ``ledger.<kind>.<n>`` beside the ledger; its name."""
    for n in itertools.count(1):
        target = path.with_name(f"{path.stem}.{kind}.{n}")
        with contextlib.suppress(FileExistsError), open(target, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            return target.name


def _count(value, name: str, minimum: int = 0) -> int:
    """An exact count: ints and numpy ints; floats and bools refused."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if operator.index(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return operator.index(value)


_OPEN: "weakref.WeakSet[Ledger]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for ledger in list(_OPEN):
        with contextlib.suppress(Exception):  # nothing useful can be raised at exit
            ledger.flush()


class Ledger:
    """The writer: one per RUN_DIR at a time (an exclusive lock); rank 0 only under torch.distributed.

    No cadence: each record is written and fsynced at once; else buffered until ``flush_every_steps``
    steps or ``flush_every_seconds`` seconds since the last write (checked at each append), and on
    flush(), close(), interpreter exit, and when dropped unclosed (then with no close record)."""

    def __init__(self, run_dir, *, flush_every_steps: int | None = None, flush_every_seconds: float | None = None,
                 meta: dict | None = None, signer=None, on_flush=None):
        """``signer`` (signing.SigningKey): each flush also writes RUN_DIR/ledger.head.dsse.json, a
        signed Statement of the head just made durable, and the start record names the key.
        ``on_flush(ledger, records)``: called after each flush with the records it made durable
        (auditor.registry.RunRecorder); an exception there is a warning, never a lost record."""
        self._open(run_dir, flush_every_steps, flush_every_seconds, signer, on_flush)
        if os.fstat(self._fd).st_size:
            self._release()
            raise LedgerError(f"{self.path} already holds a ledger; continue it with "
                              f"Ledger.resume(run_dir, checkpoint_step), or use a new run directory")
        self._emit("start", 0, 0, {"meta": self._signed_meta(meta)})
        self.flush()

    @classmethod
    def resume(cls, run_dir, checkpoint_step: int, *, flush_every_steps: int | None = None,
               flush_every_seconds: float | None = None, meta: dict | None = None,
               signer=None, on_flush=None) -> tuple["Ledger", int]:
        """Continue a run restarted from its checkpoint at ``checkpoint_step`` (the truth): set a torn tail
        aside (ledger.torn.<n>), and the records after the checkpoint (ledger.rolledback.<n>), truncate,
        append a ``resume`` record. Returns the ledger and the total carried over (docs/ledger.md)."""
        self, step = cls.__new__(cls), _count(checkpoint_step, "checkpoint_step")
        self._open(run_dir, flush_every_steps, flush_every_seconds, signer, on_flush)
        running, kept = Sums(), {}

        def visit(rec):
            running.add(rec)
            if rec["step"] <= step:
                kept["sums"] = running.copy()
        try:
            st, (cut_end, cut) = _read(self.path, keep=False, cut_step=step, visit=visit)
            self.kept = kept.get("sums", Sums())
            if cut is None and step:  # (a start record is at step 0, before any checkpoint)
                raise LedgerError(f"{self.path}: nothing to resume at step {step}: the compute before it was not "
                                  f"recorded (a new ledger, Ledger(run_dir), records from here on)")
            info = self.resume_info
            if st.torn is not None:
                info.update(torn_file=_set_aside(self.path, "torn", st.torn), torn_bytes=len(st.torn),
                            torn_reason=st.torn_reason)
                if st.torn_damaged:  # kept in the chain (the resume record's meta) as well as warned
                    warnings.warn(f"{self.path} line {st.torn_line}, set aside in {info['torn_file']}: "
                                  f"{st.torn_reason}; not what a crash leaves: check it", RuntimeWarning, stacklevel=2)
            if cut_end < st.end:
                rolled = os.pread(self._fd, st.end - cut_end, cut_end)
                info["rolled_back_file"] = _set_aside(self.path, "rolledback", rolled)
                info["rolled_back_records"], info["rolled_back_flops"] = rolled.count(b"\n"), st.total - cut["total"]
            if cut_end < os.fstat(self._fd).st_size:
                os.ftruncate(self._fd, cut_end)
                os.fsync(self._fd)
            for offset in range(0, cut_end, 1 << 20):  # the kept bytes, for the signed head's digest
                self._digest.update(os.pread(self._fd, min(1 << 20, cut_end - offset), offset))
            if cut is not None and cut["step"] < step:
                info["unrecorded_steps"] = [cut["step"], step]
                warnings.warn(f"{self.path}: the last record at or before the checkpoint is at step {cut['step']}, "
                              f"not {step}: the compute of the steps between was not recorded (flush the ledger "
                              f"before saving a checkpoint)", RuntimeWarning, stacklevel=2)
            self._last, self._flushed_step = cut, 0 if cut is None else cut["step"]
            # nothing recorded yet (a crash before the start record): begin afresh, at step 0
            self._emit("resume" if cut else "start", step, 0, {"meta": self._signed_meta({**(meta or {}), **info})})
            self.flush()
            return self, self.total
        except BaseException:
            self._release()
            raise

    total = property(lambda self: self._last["total"] if self._last else 0)
    step = property(lambda self: self._last["step"] if self._last else None)
    seq = property(lambda self: self._last["seq"] if self._last else -1)
    head = property(lambda self: self._last["hash"] if self._last else ZERO)
    closed = property(lambda self: self._fd is None)
    pending = property(lambda self: len(self._buffer))

    def append(self, step: int, flops: int, **extra) -> dict:
        """Record one interval ending at training ``step`` with its ``flops``; optional ``eval_flops``
        and ``recompute_flops`` (this interval's), ``ranks``, ``meta``. Written now or by the cadence."""
        with self._lock:
            record = self._emit("interval", step, flops, extra)
            steps, seconds = self._every_steps, self._every_seconds
            if ((steps is None and seconds is None)
                    or (steps is not None and record["step"] - self._flushed_step >= steps)
                    or (seconds is not None and time.monotonic() - self._flushed_at >= seconds)):
                self.flush()
            return dict(record)

    def flush(self) -> None:
        """Write the buffered records (one os.write) and fsync. Call it before saving a checkpoint."""
        with self._lock:
            if self._fd is None or os.getpid() != self._pid:
                return  # closed, or a forked child (a dataloader worker) holding a copy
            if self._buffer:
                data, self._buffer = memoryview(b"".join(self._buffer)), []
                try:
                    while data:  # one write in practice; a short write continues at the end (O_APPEND)
                        data = data[os.write(self._fd, data):]
                    os.fsync(self._fd)
                except OSError as exc:
                    self._broken = True
                    raise LedgerError(f"{self.path}: write failed ({exc.strerror}); the ledger is valid up to its "
                                      f"last whole line: resume it to continue") from exc
                self._flushed_step = self._last["step"]
                self._digest.update(data.obj)
                self._sign_head()
                self._tell(data.obj)
            self._flushed_at = time.monotonic()

    def _tell(self, written: bytes) -> None:
        """The on_flush callback, after the records are durable (and signed): its failure is a warning."""
        if self._on_flush is None:
            return
        try:
            self._on_flush(self, [json.loads(line) for line in written.splitlines()])
        except Exception as exc:
            warnings.warn(f"{self.path}: on_flush failed ({type(exc).__name__}: {exc}); the ledger is intact",
                          RuntimeWarning, stacklevel=3)

    def _signed_meta(self, meta: dict | None) -> dict | None:
        """The start or resume record's meta, naming the signing key: a ledger that names one and
        lacks its signature file had it removed (verify says so even without the public key)."""
        return {**(meta or {}), "signer": self._signer.keyid} if self._signer is not None else meta

    def _sign_head(self) -> None:
        """After the head is durable: a signed Statement of it (the file's digest so far, its figures)."""
        if self._signer is None:
            return
        from .atomic import write_atomic
        from .signing import LEDGER_PREDICATE, statement

        last = self._last
        predicate = {"seq": last["seq"], "head": last["hash"], "total": last["total"], "step": last["step"],
                     "kind": last["kind"], "bytes": os.fstat(self._fd).st_size}
        envelope = self._signer.sign(statement(FILENAME, self._digest.hexdigest(), LEDGER_PREDICATE, predicate))
        try:
            write_atomic(self.run_dir / SIGNATURE_FILENAME, canonical(envelope) + b"\n")
        except OSError as exc:
            self._broken = True
            raise LedgerError(f"{self.run_dir / SIGNATURE_FILENAME}: write failed ({exc.strerror}); the ledger is "
                              f"valid, its head unsigned: resume it to continue") from exc

    def close(self, step: int | None = None, **extra) -> dict | None:
        """Write a ``close`` record (at ``step``, default the last), flush, release. None if closed."""
        with self._lock:
            if self._fd is None:
                return None
            record = self._emit("close", self.step if step is None else step, 0, extra)
            self.flush()
            self._release()
            return dict(record)

    def __del__(self):
        with contextlib.suppress(Exception):
            self.flush()
            self._release()

    def _open(self, run_dir, every_steps, every_seconds, signer=None, on_flush=None) -> None:
        self._fd, self._signer, self._digest, self._on_flush = None, signer, hashlib.sha256(), on_flush
        every_steps = None if every_steps is None else _count(every_steps, "flush_every_steps", 1)
        if every_seconds is not None and (isinstance(every_seconds, bool) or not every_seconds > 0):
            raise ValueError(f"flush_every_seconds must be a positive number, not {every_seconds!r}")
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / FILENAME
        self._every_steps, self._every_seconds = every_steps, every_seconds
        self._lock, self._buffer, self._last, self.resume_info = threading.RLock(), [], None, {}
        self.kept = Sums()              # after resume: the kept records' evaluation, hardware and phase sums
        self._pid, self._flushed_at, self._flushed_step, self._broken = os.getpid(), time.monotonic(), 0, False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            pass
        except OSError:
            os.close(fd)
            raise LedgerError(f"{self.path} is in use by another process (one writer per run directory)") from None
        self._fd = fd
        if hasattr(os, "O_DIRECTORY"):  # make a new file's name durable too
            os.fsync(dfd := os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY))
            os.close(dfd)
        _OPEN.add(self)

    def _emit(self, kind: str, step, flops, extra: dict) -> dict:
        if self._fd is None or self._broken:
            raise LedgerError(f"{self.path}: the ledger is closed" if self._fd is None else
                              f"{self.path}: an earlier write failed; resume the ledger to continue")
        step, flops = _count(step, "step"), _count(flops, "flops")
        if self._last is not None and step < self._last["step"]:
            raise ValueError(f"step {step} is before the last recorded step {self._last['step']} (steps never decrease)")
        if unknown := set(extra) - {*EXTRA_INTS, "meta", "phases"}:
            raise TypeError(f"not an optional ledger field: {', '.join(sorted(unknown))}")
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self._last is not None and now < self._last["time"]:
            now = self._last["time"]          # the wall clock stepped back: records never do
        body = {"seq": self.seq + 1, "time": now,
                "step": step, "flops": flops, "total": self.total + flops, "kind": kind, "prev": self.head}
        for key, minimum in EXTRA_INTS.items():
            if extra.get(key) is not None:
                body[key] = _count(extra[key], key, minimum)
        if extra.get("phases"):
            phases = extra["phases"]
            if not isinstance(phases, dict) or not all(isinstance(k, str) for k in phases):
                raise TypeError("phases must be a mapping of phase names to ints")
            phases = {k: _count(v, f"phases[{k!r}]") for k, v in sorted(phases.items())}
            if problem := phases_problem(phases):
                raise ValueError(problem)
            body["phases"] = phases
        if extra.get("meta"):
            if not isinstance(extra["meta"], dict) or len(canonical(extra["meta"])) > MAX_META:
                raise ValueError(f"meta must be a JSON object of at most {MAX_META} bytes")
            body["meta"] = json.loads(canonical(extra["meta"]))  # a copy, as it will read back
        body["hash"] = record_hash(body)
        self._buffer.append(canonical(body) + b"\n")
        self._last = body
        return body

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        _OPEN.discard(self)
        if fd is not None and os.getpid() == self._pid:
            os.close(fd)  # closing releases the lock
