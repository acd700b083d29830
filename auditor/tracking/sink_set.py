"""A ComputeAudit's sinks (auditor/tracking/sinks.py): the events built from the audit's figures, handed to
each sink; a sink that raises is warned about once and gets no more events.

The events are built here, from what the audit exposes, so that the tracker calls one line at each
moment (start, each ledger interval, stop). The sinks see the run's all-rank figures on rank 0,
as the ledger does: other ranks hand them nothing (a metrics server would get every figure once a
rank otherwise).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from auditor.ranks import rank
from auditor.tracking.sinks import Ending, Interval, RunEnded, RunStarted, Sink


class SinkSet:
    def __init__(self, sinks: Iterable[Any] = ()):
        self._required: list[Sink] = []  # the ledger: first, and its failure is the run's
        self._live: list[Sink] = []
        for sink in sinks or ():
            if not isinstance(sink, Sink):
                raise TypeError(f"sinks: {type(sink).__name__} is not a sink; expected an object with started, "
                                f"interval and ended methods (auditor.tracking.sinks.Sink)")
            self._live.append(sink)

    def __bool__(self) -> bool:
        return bool(self._required or self._live)

    def add(self, sink: Sink, *, required: bool = False) -> None:
        """One of the audit's own sinks (the ledger, required; the progress line), before the user's."""
        if required:
            self._required.append(sink)
        else:
            self._live.insert(0, sink)

    def drop_own(self, *sinks: Sink) -> None:
        """The audit's own sinks, gone with the run that made them (a restarted audit makes new ones)."""
        self._required = [s for s in self._required if s not in sinks]
        self._live = [s for s in self._live if s not in sinks]

    def _send(self, what: str, event: Any) -> None:
        for sink in list(self._live):
            try:
                getattr(sink, what)(event)
            except Exception as exc:  # a sink's failure is the sink's: the run and the ledger go on
                self._live.remove(sink)
                warnings.warn(f"auditor: the sink {type(sink).__name__} failed in {what} ({type(exc).__name__}: "
                              f"{exc}); it gets no more events of this run", stacklevel=4)

    def started(self, audit) -> None:
        if self and rank() == 0:
            event = started_event(audit)
            for sink in self._required:
                sink.started(event)
            self._send("started", event)

    def interval(self, audit, interval) -> None:
        """An interval (tracking/intervals.py's, all ranks' on rank 0) to every sink, the ledger first."""
        if self and rank() == 0:
            event = interval_event(audit, interval)
            for sink in self._required:
                sink.interval(event)
            self._send("interval", event)

    def ended(self, audit, error: BaseException | None, after_record=None) -> None:
        """The run's end: the ledger closes (or, a failure across ranks, flushes), then
        ``after_record()`` (the dossier over the closed ledger), then the other sinks, told of it."""
        if rank() != 0:
            return
        for sink in self._required:
            sink.ended(ended_event(audit, error))
        if after_record is not None:
            after_record()
        if self._live:
            self._send("ended", ended_event(audit, error))


def _phases(audit) -> dict[str, int]:
    """Every phase's figure so far over all ranks (a resumed ledger's included), as the ledger holds them."""
    return audit.flops_by_phase if audit._world == 1 else audit._all_rank_phases()


def started_event(audit) -> RunStarted:
    authorization = None
    if audit.authorization is not None:
        from auditor.record.authorization import ledger_meta

        authorization = ledger_meta(audit.authorization, audit._budget[3])
    return RunStarted(name=audit.name, run_dir=str(audit.run_dir) if audit.run_dir is not None else None,
                      rank=rank(), world_size=audit._world, resumed_at=audit.resume_step, authorization=authorization)


def interval_event(audit, interval) -> Interval:
    phases = _phases(audit)
    new = {k: v for k, v in sorted({"eval": interval.eval, **interval.phases}.items()) if v}
    return Interval(step=interval.step, total_flops=audit.all_ranks_flops, flops=interval.flops,
                    eval_flops=phases.get("eval", 0), phases=phases, budget_used=audit.budget_used(), new_phases=new,
                    recompute_flops=interval.recompute,
                    hardware_flops=interval.hardware if interval.hardware != interval.flops else None,
                    ranks=audit._world)


def ending_of(error: BaseException | None) -> tuple[Ending, str | None]:
    from auditor.tracking import ComputeBudgetExceeded

    if error is None:
        return "finished", None
    if isinstance(error, ComputeBudgetExceeded):
        return "stopped", str(error)
    return "crashed", f"{type(error).__name__}: {error}"


def ended_event(audit, error: BaseException | None) -> RunEnded:
    ending, why = ending_of(error)
    dossier = None
    # a crashed run under torch.distributed writes no dossier (no collective after a failure)
    if audit.run_dir is not None and (audit.run_dir / "dossier.json").is_file() and \
            not (ending == "crashed" and audit._world > 1):
        dossier = str(audit.run_dir / "dossier.json")
    return RunEnded(ending=ending, step=audit.steps, total_flops=audit.all_ranks_flops,
                    eval_flops=_phases(audit).get("eval", 0), dossier=dossier, why=why)
