"""Optimizer steps: torch's step hooks, a wrapped ``step()`` for anything else, and closures (LBFGS)
whose forward and backward are training compute.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from auditor.counting.optimizer import elementwise_step
from auditor.counting.result import StepCount

if TYPE_CHECKING:
    from auditor.tracking.audit import ComputeAudit


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer that really steps: the object itself, or the one a wrapper holds
    (accelerate's AcceleratedOptimizer, Lightning's LightningOptimizer), whose step hooks work."""
    seen = set()
    while optimizer is not None and id(optimizer) not in seen:
        seen.add(id(optimizer))
        if isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "_optimizer_step_pre_hooks"):
            return optimizer
        optimizer = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
    return None


def _with_audited_closure(audit: ComputeAudit, args: tuple, kwargs: dict, at: int = 0) -> tuple[tuple, dict] | None:
    """The step's arguments with its closure (``args[at]`` or ``closure=``) wrapped so that the
    forward and backward it runs (LBFGS runs it several times a step) are training compute, the
    rest optimizer work."""
    if len(args) > at and callable(args[at]):
        return (*args[:at], _audited(audit, args[at]), *args[at + 1:]), kwargs
    if callable(kwargs.get("closure")):
        return args, {**kwargs, "closure": _audited(audit, kwargs["closure"])}
    return None


def _audited(audit: ComputeAudit, closure: Callable) -> Callable:
    @functools.wraps(closure)
    def run_closure(*args, **kwargs):
        audit._closure_enters()
        try:
            return closure(*args, **kwargs)
        finally:
            audit._closure_leaves()
    return run_closure


class _StepWrapper:
    """An object's ``step`` replaced by one that tells the audit when it begins and ends; removed
    like a hook handle (left in place, and inert, if something wrapped it again since)."""

    def __init__(self, audit: ComputeAudit, stepper: Any):
        self.stepper, self.original = stepper, stepper.step
        self.had_own = "step" in getattr(stepper, "__dict__", {})
        self.active = True
        wrapper = self

        @functools.wraps(self.original)
        def step(*args, **kwargs):
            if not wrapper.active:
                return wrapper.original(*args, **kwargs)
            audit._step_begins()
            changed = _with_audited_closure(audit, args, kwargs)
            if changed is not None:
                args, kwargs = changed
            try:
                return wrapper.original(*args, **kwargs)
            finally:
                audit._step_ends()
        self.step = step
        try:
            stepper.step = step
        except (AttributeError, TypeError):
            raise TypeError(f"optimizer: cannot watch the step of a {type(stepper).__name__} "
                            "(its step method cannot be replaced)") from None

    def remove(self) -> None:
        self.active = False
        if getattr(self.stepper, "__dict__", {}).get("step") is self.step:
            if self.had_own:
                self.stepper.step = self.original
            else:
                del self.stepper.step


class OptimizerSteps:
    """Watches the optimizer: a step begins (the window closes), ends (the step is counted). A part of
    ComputeAudit (auditor/tracking/audit.py), whose state it shares."""

    def _watch_steps(self, optimizer: Any) -> None:
        """Watch the steps of anything with a ``step()``; torch's optimizers through their step hooks
        (found inside accelerate's and other wrappers, whose own step may not be a real one)."""
        inner = _torch_optimizer(optimizer)
        if inner is not None:
            self._stepper, self._measure = inner, not elementwise_step(inner)
            self._handles.append(inner.register_step_pre_hook(self._step_pre_hook))
            self._handles.append(inner.register_step_post_hook(lambda *a: self._step_ends()))
        elif callable(getattr(optimizer, "step", None)):
            self._stepper, self._measure = optimizer, True
            self._handles.append(_StepWrapper(self, optimizer))
        elif callable(getattr(optimizer, "register_step_pre_hook", None)):  # a StepSignal (integrations)
            self._stepper, self._measure = optimizer, False
            self._handles.append(optimizer.register_step_pre_hook(lambda *a: self._step_begins()))
            self._handles.append(optimizer.register_step_post_hook(lambda *a: self._step_ends()))
        else:
            raise TypeError(f"optimizer: expected an object with a step() method, got {type(optimizer).__name__}")

    def _step_pre_hook(self, optimizer, args, kwargs):
        self._step_begins()
        if len(args) > 1 or kwargs:  # torch passes the optimizer as args[0]; a closure comes after it
            return _with_audited_closure(self, args, kwargs, at=1)
        return None

    def _step_begins(self) -> None:
        """The gradients of the step are complete: what follows is the optimizer's."""
        if self._window is not None:
            self._end_tail()
            self._close_window()
        self._tail, self._position, self._backward_seen = None, 0, False
        self._in_step, self._in_closure = True, 0
        self._measure_step = self._measure
        if self._measure or self._mode is not None:
            self._sync_mode()

    def _step_ends(self) -> None:
        self._leave_step_state()
        self._end_step()

    def _leave_step_state(self) -> None:
        if not self._in_step:
            return
        if self._window is not None:  # opened by a closure's call
            self._end_tail()
            self._close_window()
        self._in_step = self._measure_step = False
        if self._mode is not None:
            self._sync_mode()
        if not (self._optimizer_count.records or self._optimizer_count.uncovered):
            return  # nothing measured (torch's elementwise optimizers are not): no count to take
        count, self._optimizer_count = self._optimizer_count, StepCount()
        self.optimizer_flops += count.total + count.recompute
        if count.uncovered:
            self.optimizer_uncovered.update(count.uncovered)
            self._warn_once("optimizer-uncovered", "operators without a FLOP formula in the optimizer's step: "
                            + ", ".join(sorted(count.uncovered)))

    def _closure_enters(self) -> None:
        self._in_closure += 1
        self._sync_mode()

    def _closure_leaves(self) -> None:
        self._in_closure -= 1
        self._end_tail()
        self._tail = None
        self._sync_mode()

    def _end_step(self) -> None:
        self.steps += 1
        self._step_cost, self._last_step_flops = self._last_step_flops, 0
        if self._world == 1:
            if self._sinks and self._flush.due(self.steps, self.total_flops):  # the ledger, progress, yours
                self._write_interval()
        elif self.steps % self.flush_every_steps == 0:
            self._write_interval()
