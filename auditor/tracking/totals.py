"""The run's figures: training, evaluation, each phase, hardware work, over this rank or every rank,
and the Estimate the rules judge.
"""
from __future__ import annotations


from auditor.estimate import Estimate


class Totals:
    """The figures a tracked run reports. A part of ComputeAudit (auditor/tracking/audit.py), whose state it
    shares."""

    @property
    def flops_by_phase(self) -> dict[str, int]:
        """Each phase's FLOPs as ints: ``train`` (``total_flops``), ``eval`` and every tagged phase met,
        a resumed ledger's included. Under torch.distributed, this rank's until stop()."""
        out = {"train": self.total_flops, "eval": self._base_phases.get("eval", 0) + self.eval_flops}
        for name in sorted(set(self._phase_flops) | set(self._base_phases) - {"eval"}):
            out[name] = self._base_phases.get(name, 0) + self._phase_flops.get(name, 0)
        return out

    @property
    def hardware_flops(self) -> int:
        """The local work each rank ran for the training calls (forward + backward): under tensor
        parallelism a layer left unparallelized counts once for every rank that runs it, where
        ``total_flops`` counts the model's compute once per replica. Otherwise ``total_flops``."""
        return self.base_hardware + self.train_flops + self._hardware_extra

    @property
    def total_flops(self) -> int:
        """Training FLOPs (forward + backward) over every step so far, resumed ledger included.
        Under torch.distributed, this rank's until stop() (``all_ranks_flops`` is the run's)."""
        return self.base_flops + self.train_flops

    @property
    def all_ranks_flops(self) -> int:
        """The run's training FLOPs over every rank, as of the last ``sync()`` (the ledger's total)."""
        return self.total_flops if self._world == 1 else self.base_flops + self._reduced[0]

    @property
    def all_ranks_eval_flops(self) -> int:
        return self.eval_flops if self._world == 1 else self._reduced[1]

    @property
    def estimate(self) -> Estimate:
        """The run as the rules see it: ``flops`` is training compute; ``phases`` every phase's
        figure, of which each rule compares the sum of those it counts."""
        total = self.total_flops
        details = {"eval_flops": self.eval_flops, "recompute_flops": self.recompute_flops,
                   "optimizer_flops": self.optimizer_flops, "steps": self.steps, "resumed_from_flops": self.base_flops,
                   "hardware_flops": self.hardware_flops}
        if self.optimizer_uncovered:
            details["optimizer_uncovered_ops"] = sorted(self.optimizer_uncovered)
        assumptions = [
            f"measured while the run ran: {self.steps} steps, {self.counted_signatures} distinct calls of the model "
            "counted at dispatch level, the rest added from those exact counts",
            "evaluation (no-grad) calls, recomputation and the optimizer's own arithmetic are reported apart, "
            "not in this figure; each phase's figure is in flops_by_phase, and each rule compares the sum of "
            "the phases it counts"]
        if self._decode.predicted:
            assumptions.append(self._decode.assumption())
        if self._side_counts:
            assumptions.append(f"compiled model: {len(self._side_counts)} distinct calls counted on meta copies of "
                               "the model and inputs (compiled code run eagerly there, never in the step), their "
                               "backward from every output that needs a gradient; the compiled graphs ran unobserved")
        if self._provenance is not None and self._provenance.replica is not None:
            assumptions.append(self._provenance.assumption())
        return Estimate(method="counted", flops=total, low=total, high=total, uncovered_ops=sorted(self.uncovered),
                        breakdown=dict(self._breakdown), details=details, assumptions=assumptions,
                        phases=self.flops_by_phase)
