"""When a tracked run writes a ledger record (docs/ledger.md, "When a tracked run writes a record").

One process (a run without torch.distributed): a record when ``every_steps`` optimizer steps or
``every_seconds`` seconds have passed since the last one, when the training total passes a line the
run guards (a blocking rule in force, the authorized budget), at every ``checkpoint()``, when the
guard stops the run, and at the end. Each record is written and fsynced as it is made, so a
SIGKILL loses at most the steps since the last record: fewer than ``every_steps`` steps and, give
or take one step, ``every_seconds`` of training. Between records a step costs the tracker an
integer add and this check: two int comparisons and a read of the monotonic clock.

Under torch.distributed the ranks write at the steps they all reach (every ``flush_every_steps``
steps, ``checkpoint()``, ``sync()``), a collective the tracker runs itself; this policy is not used.
"""
from __future__ import annotations

import bisect
import math
import operator
import time
from collections.abc import Iterable

STEPS, SECONDS = 100, 300.0   # defaults: a 1,000,000-step run writes ~10,000 records (~3 MB)
NEVER = 1 << 256              # past any step or FLOP count


def _every_steps(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not hasattr(type(value), "__index__") or operator.index(value) < 1:
        raise ValueError(f"flush_every_steps must be an int >= 1 or None, not {value!r}")
    return operator.index(value)


def _every_seconds(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"flush_every_seconds must be a positive number or None, not {value!r}")
    return float(value)


def trigger(threshold: int, comparison: str) -> int:
    """The least int total past ``threshold`` by ``comparison`` ('>' or '>='; whole-number thresholds,
    as verdicts.threshold_flops gives them)."""
    return threshold + 1 if comparison == ">" else threshold


class FlushPolicy:
    """Whether the step just ended is due a record; ``written`` after each record is made."""

    __slots__ = ("every_steps", "every_seconds", "lines", "due_step", "due_at", "next_line")

    def __init__(self, every_steps: int | None = STEPS, every_seconds: float | None = SECONDS,
                 lines: Iterable[tuple[int, str]] = (), *, step: int = 0, total: int = 0):
        """``lines``: (threshold, comparison) pairs of the limits the run guards; ``step`` and ``total``:
        where the ledger stands now (a resumed run's checkpoint step and carried total)."""
        self.every_steps, self.every_seconds = _every_steps(every_steps), _every_seconds(every_seconds)
        self.lines = sorted({trigger(t, c) for t, c in lines})
        self.written(step, total)

    def due(self, step: int, total: int) -> bool:
        """Whether a record is due after ``step`` with the run's training ``total``: the hot path."""
        return step >= self.due_step or total >= self.next_line or time.monotonic() >= self.due_at

    def written(self, step: int, total: int) -> None:
        """A record was made at ``step`` (or the ledger stands there): the next is due from here."""
        self.due_step = step + self.every_steps if self.every_steps else NEVER
        self.due_at = time.monotonic() + self.every_seconds if self.every_seconds else math.inf
        at = bisect.bisect_right(self.lines, total)
        self.next_line = self.lines[at] if at < len(self.lines) else NEVER


def at_checkpoint(ledger, step: int) -> None:
    """A ``checkpoint()`` always leaves a record at its step, even after steps that counted nothing,
    so that a run resumed there finds one (resume is exact only at a record's step)."""
    if ledger is not None and not ledger.closed and (ledger.step is None or ledger.step < step):
        ledger.append(step, 0, ranks=1)
