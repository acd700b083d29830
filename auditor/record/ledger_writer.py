"""The ledger's writer: append-only, fsynced, one writer per run folder, resumable (docs/ledger.md).

Each flush is one ``os.write`` on an O_APPEND descriptor, then fsync, so a crash leaves at most one
unfinished last line: the torn tail, set aside, never data.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import json
import operator
import os
import threading
import time
import warnings
import weakref
from datetime import datetime, timezone
from pathlib import Path

from auditor.record.ledger import (
    EXTRA_INTS,
    FILENAME,
    MAX_META,
    SIGNATURE_FILENAME,
    ZERO,
    LedgerError,
    Sums,
    _read,
    canonical,
    phases_problem,
    record_hash,
)


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
        from auditor.files import write_atomic
        from auditor.record.signing import LEDGER_PREDICATE, statement

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
