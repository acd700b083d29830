"""Callbacks that put a ComputeAudit on a training framework's run: see docs/integrations.md.

``auditor.integrations.huggingface.AuditCallback``: a ``transformers.TrainerCallback``.
``auditor.integrations.lightning.AuditCallback``: a ``lightning.pytorch.Callback``.

Each module imports its framework when it is imported itself, never before: ``import auditor``
and this package need neither.

Both callbacks hand ComputeAudit a stand-in for the optimizer (``StepSignal``) and fire its step
hooks from the framework's own events. Frameworks wrap the real optimizer (accelerate's
AcceleratedOptimizer does not run torch's step hooks, a GradScaler may skip the inner step,
Lightning runs the forward and backward inside ``optimizer.step(closure)``), but they say
reliably when the gradients of a step are complete and when the step is over.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch.utils.hooks import RemovableHandle

__all__ = ["StepSignal", "AuditOptions"]


class StepSignal:
    """Duck-types the two hook methods of ``torch.optim.Optimizer`` that ComputeAudit uses.

    ``before()``: the gradients of the step are complete (the counting window closes here, so
    the optimizer's own arithmetic is never part of a step's count); ``after()``: the step is
    over (ComputeAudit counts it and, under torch.distributed, flushes on its cadence).
    """

    def __init__(self) -> None:
        self._pre: OrderedDict[int, Callable] = OrderedDict()
        self._post: OrderedDict[int, Callable] = OrderedDict()

    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        handle = RemovableHandle(self._pre)
        self._pre[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: Callable) -> RemovableHandle:
        handle = RemovableHandle(self._post)
        self._post[handle.id] = hook
        return handle

    def before(self) -> None:
        for hook in list(self._pre.values()):
            hook(self, (), {})

    def after(self) -> None:
        for hook in list(self._post.values()):
            hook(self, (), {})


def check_on_exceed(on_exceed: str | None) -> None:
    """Fail when the callback is made, not when training starts."""
    if on_exceed not in (None, "warn", "stop"):
        raise ValueError(f"on_exceed must be 'warn' or 'stop', got {on_exceed!r}")


class AuditOptions:
    """What both callbacks take and keep: the ComputeAudit's settings, the audit, its step signal."""

    def __init__(self, run_dir=None, rules: list[str] | None = None, on_exceed: str | None = None, **options):
        check_on_exceed(on_exceed)
        self.run_dir, self.rules, self.on_exceed, self.options = run_dir, rules, on_exceed, options
        self.audit = None            # the ComputeAudit of the latest run (None before the first)
        self._signal: StepSignal | None = None
        self._steps_at_start = 0

    def _start_audit(self, model, checkpoint_step: int | None = None) -> None:
        """A fresh ComputeAudit on ``model``, started. A run restored from a checkpoint (its
        ``checkpoint_step``) resumes the ledger there, unless ``resume_step`` was given."""
        from auditor.tracking import ComputeAudit

        options = dict(self.options)
        if self.run_dir is not None and checkpoint_step and "resume_step" not in options:
            options["resume_step"] = checkpoint_step
        self._signal = StepSignal()
        self.audit = ComputeAudit(self.run_dir, model, self._signal, rules=self.rules,
                                  on_exceed=self.on_exceed, **options)
        self.audit.start()
        self._steps_at_start = self.audit.steps


def log_values(audit) -> dict:
    """What the callbacks log: the run's figures over every rank, and the share of its authorized
    budget used where it holds one."""
    values = {"compute_flops": audit.all_ranks_flops, "compute_eval_flops": audit.all_ranks_eval_flops}
    used = audit.budget_used()
    if used is not None:
        values["compute_budget_used"] = used
    return values


def warn_if_nothing_seen(audit, steps_at_start: int, where: str) -> None:
    """Optimizer steps ran but the watched module never did: the count is zero and wrong.

    Called before ``stop()`` (which replaces this rank's count with all ranks' sum)."""
    import warnings

    if audit is not None and audit.steps > steps_at_start and not audit.train_flops:
        warnings.warn(f"{where}: {audit.steps} optimizer steps ended but no forward pass of the watched model was "
                      "seen; nothing was counted (was the model replaced after the callback was given it?)",
                      stacklevel=3)
