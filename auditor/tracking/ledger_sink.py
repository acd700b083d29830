"""The ledger as a sink: each interval becomes its record, the run's end its close.

The audit opens the ledger itself at start (a resumed ledger says where the run stands before any
event), and flushes it where durability is the point (a checkpoint, a stop by the guard); every
record of the run's compute goes in through this sink. It is required (sink_set.py): it hears each
event first, and its failure is the run's.
"""
from __future__ import annotations

from auditor.tracking.sinks import Interval, RunEnded, RunStarted


class LedgerSink:
    def __init__(self, ledger, ranks: int):
        self.ledger, self.ranks = ledger, ranks

    def started(self, event: RunStarted) -> None:
        pass  # the start (or resume) record was written when the ledger opened

    def interval(self, event: Interval) -> None:
        evaluation = event.new_phases.get("eval", 0)
        phases = {k: v for k, v in event.new_phases.items() if k != "eval"}
        self.ledger.append(event.step, event.flops, eval_flops=evaluation, recompute_flops=event.recompute_flops,
                           ranks=event.ranks, phases=phases or None, hardware_flops=event.hardware_flops)

    def ended(self, event: RunEnded) -> None:
        """Closed at the end of a run, stopped or failed, in one process; across ranks a failure or
        a stop flushes it unclosed (no collective after a failure: a resumed run picks it up)."""
        if self.ranks == 1 or event.ending == "finished":
            self.ledger.close(event.step)
        else:
            self.ledger.flush()
