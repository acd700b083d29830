"""The progress line as a sink: ``[auditor] step N: X FLOPs; share of the budget; nearest threshold``
on stderr, at the first interval at or past every ``every`` steps (the audit's flush policy takes a
record at least that often in one process; across ranks, at each flush)."""
from __future__ import annotations

import sys
from collections.abc import Callable

from auditor.text import sci
from auditor.tracking.sinks import Interval, RunEnded, RunStarted


class ProgressLine:
    def __init__(self, every: int, words: Callable[[], str]):
        self.every, self._words, self._next = every, words, every

    def started(self, event: RunStarted) -> None:
        self._next = ((event.resumed_at or 0) // self.every + 1) * self.every

    def interval(self, event: Interval) -> None:
        if event.step >= self._next:
            self._next = (event.step // self.every + 1) * self.every
            print(f"[auditor] step {event.step}: {sci(event.total_flops)} FLOPs" + self._words(), file=sys.stderr)

    def ended(self, event: RunEnded) -> None:
        pass
