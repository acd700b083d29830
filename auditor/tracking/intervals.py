"""Ledger intervals: the FLOPs since the last record, summed across ranks (collective) and written by
rank 0; torch.distributed's Join, under which ranks step unevenly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from auditor.ranks import (
    collective_device,
    max_across_ranks,
    rank,
    sum_across_ranks,
)

if TYPE_CHECKING:
    from auditor.tracking.audit import ComputeAudit


@dataclass
class _Interval:
    """FLOPs since the last ledger record, ending at ``step``: training, evaluation, recomputation,
    the training calls' hardware work, and each tagged phase's."""

    step: int = 0
    flops: int = 0
    eval: int = 0
    recompute: int = 0
    hardware: int = 0
    phases: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.flops or self.eval or self.recompute or self.hardware or any(self.phases.values()))

    def by_phase(self) -> dict[str, int]:
        return {"train": self.flops, "eval": self.eval, **self.phases}

    def vector(self, names: list[str]) -> list[int]:
        """The figures in a fixed order (the tagged phases in ``names``' order), to sum across ranks."""
        return [self.flops, self.eval, self.recompute, self.hardware, *(self.phases.get(n, 0) for n in names)]

    @classmethod
    def from_vector(cls, step: int, values: list[int], names: list[str]) -> "_Interval":
        return cls(step, *values[:4], dict(zip(names, values[4:])))

    def add(self, other: "_Interval") -> None:
        self.step = max(self.step, other.step)
        self.flops, self.eval = self.flops + other.flops, self.eval + other.eval
        self.recompute, self.hardware = self.recompute + other.recompute, self.hardware + other.hardware
        for name, v in other.phases.items():
            self.phases[name] = self.phases.get(name, 0) + v


def _flush_buckets(intervals: list[_Interval], every: int) -> dict[int, _Interval]:
    """Intervals gathered by flush interval (steps ((b-1)F, bF]), so that ranks that stepped
    unevenly meet: bucket -> their sum, at its last step."""
    buckets: dict[int, _Interval] = {}
    for interval in intervals:
        buckets.setdefault(-(-interval.step // max(every, 1)), _Interval(interval.step)).add(interval)
    return buckets


class _JoinHook:
    """torch.distributed.algorithms.Join: the audit runs no collective while ranks may be joined,
    so there is nothing to shadow; once all ranks have joined (every rank runs post_hook) the
    counts kept back are summed."""

    def __init__(self, audit: "ComputeAudit"):
        self.audit = audit

    def main_hook(self) -> None:
        pass

    def post_hook(self, is_last_joiner: bool) -> None:
        self.audit._join_ended()


class LedgerIntervals:
    """Takes, sums and appends intervals; the Joinable protocol. A part of ComputeAudit
    (auditor/tracking/audit.py), whose state it shares."""

    def _take_interval(self) -> "_Interval":
        """This rank's FLOPs since the last interval, by figure."""
        flops, self._interval_flops = self._interval_flops, 0
        extra, self._interval_extra = self._interval_extra, 0
        phases, self._interval_phases = self._interval_phases, {}
        eval_delta, self._written_eval = self.eval_flops - self._written_eval, self.eval_flops
        recompute_delta, self._written_recompute = self.recompute_flops - self._written_recompute, self.recompute_flops
        return _Interval(self.steps, flops, eval_delta, recompute_delta, flops + extra, phases)

    def _write_interval(self) -> None:
        """One ledger record for the FLOPs since the last; across ranks, their sum (rank 0 writes).

        Every rank reaches this at the same steps (every step alone, every flush_every_steps
        steps, at checkpoint() and sync() under torch.distributed), so the all-reduce is
        collective, and the guard decides there on figures every rank shares, so that all ranks
        stop at the same step. Under Join, ranks may be joined and run none of this: the counts
        are kept back until every rank has joined."""
        interval = self._take_interval()
        self._flush.written(self.steps, self.total_flops)
        if self._world > 1 and self._under_join():
            if interval:
                self._deferred.append(interval)
            self._warn_once("join", "auditor: under Join, ranks run different numbers of steps; the counts of "
                            "all ranks are summed (and the ledger written, and the guard consulted) once every "
                            "rank has joined")
            return
        if self._world > 1:
            names = self._phase_names_everywhere()
            interval = _Interval.from_vector(self.steps, sum_across_ranks(interval.vector(names)), names)
            self._accumulate(interval)
            self._guard_shared(interval)
            if rank() != 0:
                return
        self._append(interval)

    def _append(self, interval: "_Interval") -> None:
        """An interval to the sinks: the ledger's record of it first (tracking/ledger_sink.py)."""
        if interval:
            self._sinks.interval(self, interval)

    def _accumulate(self, interval: "_Interval") -> None:
        """An all-rank interval into the all-rank figures every rank holds."""
        self._reduced = [a + b for a, b in zip(self._reduced, interval.vector([])[:4])]
        for name, v in interval.phases.items():
            self._reduced_phases[name] = self._reduced_phases.get(name, 0) + v

    def _all_rank_phases(self) -> dict[str, int]:
        """Each phase's FLOPs over every rank, as of the last sum (a resumed ledger's included)."""
        out = {"train": self.base_flops + self._reduced[0], "eval": self._base_phases.get("eval", 0) + self._reduced[1]}
        for name in set(self._reduced_phases) | set(self._base_phases) - {"eval"}:
            out[name] = self._base_phases.get(name, 0) + self._reduced_phases.get(name, 0)
        return out

    def _phase_names_everywhere(self) -> list[str]:
        """The tagged phases any rank has met, in one order on every rank (collective)."""
        import torch.distributed as dist

        local = sorted(set(self._phase_flops) | set(self._interval_phases))
        if not max_across_ranks([len(local)])[0]:
            return []
        gathered: list = [None] * self._world
        dist.all_gather_object(gathered, local)
        return sorted(set().union(*gathered))

    def _under_join(self) -> bool:
        """In a Join this audit was given to, or watching a DistributedDataParallel model given to one."""
        if self._joining:
            return True
        return any(getattr(getattr(m, "_join_config", None), "enable", False) for m in self._watched)

    def _sync_all(self) -> None:
        """At a point every rank reaches (stop(), the end of a Join): the counts kept back and the
        last interval, summed across ranks interval by interval, written by rank 0."""
        if self._world == 1:
            self._write_interval()
            return
        interval = self._take_interval()
        if interval:
            self._deferred.append(interval)
        buckets = _flush_buckets(self._deferred, self.flush_every_steps)
        self._deferred = []
        none = 1 << 62
        last, minus_first, self.steps = max_across_ranks([max(buckets, default=0), -min(buckets, default=none),
                                                          self.steps])
        names = self._phase_names_everywhere()
        rows = [buckets.get(b, _Interval()) for b in range(-minus_first, last + 1)]
        if not rows:
            return
        steps = max_across_ranks([r.step for r in rows])
        width = len(_Interval().vector(names))
        sums = sum_across_ranks([v for r in rows for v in r.vector(names)])
        for i, step in enumerate(steps):
            interval = _Interval.from_vector(step, sums[width * i:width * (i + 1)], names)
            if not interval:
                continue
            self._accumulate(interval)
            self._guard_shared(interval)
            if rank() == 0:
                self._append(interval)

    # Joinable (torch.distributed.algorithms.join): Join([ddp_model, audit]) lets ranks step unevenly.
    def join_hook(self, **kwargs) -> _JoinHook:
        self._joining = True
        return _JoinHook(self)

    @property
    def join_device(self) -> torch.device:
        return torch.device(collective_device())

    @property
    def join_process_group(self):
        import torch.distributed as dist
        return dist.group.WORLD

    def _join_ended(self) -> None:
        self._joining = False
        self._end_tail()
        self._sync_all()
