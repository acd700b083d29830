"""The guard: the blocking rules in force and the authorized budget as limits, checked before each
call (alone) or at each interval (across ranks); stop or warn.
"""
from __future__ import annotations

import warnings

from auditor.text import sci
from auditor.tracking.calls import CallCost
from auditor.tracking.intervals import _Interval


class ComputeBudgetExceeded(RuntimeError):
    """Raised before a step that would cross a blocking threshold, with on_exceed='stop'."""


class Guard:
    """Reads the limits, checks them, stops or warns, and says how near the run is. A part of ComputeAudit
    (auditor/tracking/audit.py), whose state it shares."""

    def _read_limits(self) -> None:
        """The blocking rules in force and the authorized budget, as (name, threshold, comparison,
        phases counted): what the guard checks before every call."""
        self._limits = []
        if self._rule_ids:
            from auditor.rules.selection import load_rules
            from auditor.rules.verdicts import blocking_limits
            self.rules = load_rules(self._rule_ids)
            self._limits = blocking_limits(self.rules)  # read once: the guard runs before every call
        if self.authorization is not None:
            from auditor.record.authorization import counted_phases
            from auditor.record.signing import short_id

            auth = self.authorization
            self._budget = (f"the budget authorized by {auth.approver.name} ({short_id(auth.approver.keyid)}), "
                            f"{sci(auth.budget_flops)} FLOP", auth.budget_flops, ">", counted_phases(auth))
            self._limits.append(self._budget)
        self._guarded = frozenset(p for *_, counted in self._limits for p in counted)

    def _guard_shared(self, interval: "_Interval") -> None:
        """Under torch.distributed: stop (or warn) when another interval like the last one would
        cross a blocking threshold; the figures are the all-rank sums every rank holds."""
        if not self._limits:
            return
        phases = self._all_rank_phases()
        crossing, figure = self._crossing(lambda p: phases.get(p, 0), interval.by_phase())
        if crossing:
            self._act(f"auditor: all {self._world} ranks have used {sci(phases['train'])} training FLOPs; the next "
                      f"{self.flush_every_steps} steps would reach about {sci(figure)}, crossing {crossing}",
                      crossing)

    def _guard(self, cached: CallCost | None, phase: str) -> None:
        if not self._limits or self._world > 1:  # across ranks: _guard_shared
            return
        next_cost = cached.forward + cached.tail + (cached.backward or 0) if cached else self._step_cost
        crossing, figure = self._crossing(self._phase_figure, {phase: next_cost})
        if crossing:
            self._act(f"auditor: the next call would take the run to about {sci(figure)} FLOPs, "
                      f"crossing {crossing}", crossing)

    def _act(self, message: str, crossing: str) -> None:
        """Stop (the ledger flushed first) or warn once. Rules warn unless on_exceed='stop'; the
        authorized budget stops unless on_exceed='warn'."""
        budget = self._budget is not None and self._budget[0] in crossing
        if self.on_exceed == "stop" or (budget and self.on_exceed is None):
            if self._world == 1:
                self._write_interval()  # the steps since the last record (the flush policy), then the stop
            if self._ledger is not None:
                self._ledger.flush()
            self.facts.stopped_by(crossing, self.steps, self.total_flops, message)
            stopped = ComputeBudgetExceeded(message)
            if self._world == 1:  # the dossier now, saying so: a framework may never reach stop() after this
                self.stop(error=stopped)  # the sinks hear 'stopped', not 'finished'
            raise stopped
        self._warn_once(crossing, message)

    def _phase_figure(self, phase: str) -> int:
        """One phase's figure on this rank so far (flops_by_phase[phase], without building it)."""
        if phase == "train":
            return self.total_flops
        extra = self.eval_flops if phase == "eval" else self._phase_flops.get(phase, 0)
        return self._base_phases.get(phase, 0) + extra

    def _crossing(self, phases, more: dict[str, int]) -> tuple[str | None, int]:
        """The blocking rules in force that a run of exactly these phase figures (``phases(name)``),
        plus ``more``, crosses (each rule summing the phases it counts), and the largest figure
        compared."""
        from auditor.rules.verdicts import passes

        failing, largest = [], 0
        for rule, threshold, comparison, counted in self._limits:
            figure = sum(phases(p) + more.get(p, 0) for p in counted)
            largest = max(largest, figure)
            if passes(figure, threshold, comparison):
                failing.append(rule)
        return (", ".join(failing) if failing else None), largest

    def _nearest(self) -> str:
        from auditor.rules.verdicts import passes

        ahead = sorted((threshold, rule) for rule, threshold, comparison, counted in self._limits
                       if not passes(sum(map(self._phase_figure, counted)), threshold, comparison))
        return f"; nearest threshold {ahead[0][1]} at {sci(ahead[0][0])}" if ahead else ""

    def budget_used(self) -> float | None:
        """The share of the authorized budget used so far, over every rank as of the last ``sync()``
        (None without an authorization)."""
        if self._budget is None:
            return None
        from auditor.record.authorization import used_flops

        if self._world == 1:
            return sum(map(self._phase_figure, self._budget[3])) / self._budget[1]
        return used_flops(self._all_rank_phases(), self._budget[3]) / self._budget[1]

    def _budget_words(self) -> str:
        share = self.budget_used()
        return "" if share is None else f"; {share:.1%} of the authorized {sci(self._budget[1])} FLOP"

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)
