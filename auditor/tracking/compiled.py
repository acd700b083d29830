"""torch.compile'd models: a new call key counted on meta copies beside the compiled frame (a dispatch
mode over a compiled frame would make Dynamo skip it for good).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils._pytree import tree_flatten

from auditor.counting.dtensor import dtensor_class
from auditor.counting.mode import CountingMode
from auditor.counting.moe import dense_expert_modules
from auditor.counting.result import StepCount
from auditor.tracking.calls import _UNCOUNTED_COMPILED, CallCost

if TYPE_CHECKING:
    from auditor.tracking.audit import ComputeAudit


def _add_records(into: StepCount, count: StepCount, phases: tuple[str, ...]) -> None:
    """A compiled call's records of these phases, as counted on meta, into its live count."""
    for key, v in count.records.items():
        if key[0] in phases:
            into.records[key] += v
    if "forward" in phases:
        into.uncovered.update(count.uncovered)


def _compiled_target(module: torch.nn.Module) -> torch.nn.Module | None:
    """What to count on meta for a compiled module: torch.compile's wrapper's original module, or a
    module compiled in place (``module.compile()``) itself; None for an eager module."""
    original = getattr(module, "_orig_mod", None)
    if isinstance(original, torch.nn.Module):
        return original
    return module if getattr(module, "_compiled_call_impl", None) is not None else None


def _holds_dtensors(model: torch.nn.Module) -> bool:
    dtensor = dtensor_class()
    return dtensor is not None and any(isinstance(p, dtensor) for p in model.parameters())


def _holds_compiled(model: torch.nn.Module) -> bool:
    return any(m is not model and _compiled_target(m) is not None for m in model.modules())


def _count_on_meta(audit: "ComputeAudit", target: torch.nn.Module, args: tuple, kwargs: dict,
                   grad: bool) -> StepCount:
    """One call of ``target`` on meta copies of its parameters, buffers and inputs (the same shapes,
    dtypes, strides and grad flags), with the counter there and compiled code run eagerly: its
    forward and, with grad, the backward from every output that needs a gradient. Nothing of the
    live step (the real tensors, their .grad, the compiled graphs) is touched."""
    from torch.func import functional_call

    def meta(t):
        if not isinstance(t, torch.Tensor):
            return t
        copy = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="meta")
        return copy.requires_grad_(True) if t.requires_grad else copy

    params = {n: torch.nn.Parameter(meta(p).detach(), requires_grad=p.requires_grad)
              for n, p in target.named_parameters()}
    state = {**params, **{n: meta(b) for n, b in target.named_buffers()}}
    margs, mkwargs = torch.utils._pytree.tree_map(meta, (args, kwargs))
    counter = CountingMode(target, dense_expert_modules(target))
    audit._side_counting = True
    try:
        with torch.compiler.set_stance("force_eager"), counter, torch.set_grad_enabled(grad):
            out = functional_call(target, state, margs, mkwargs)
            if grad:
                outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
                wrt = [p for p in params.values() if p.requires_grad] + [
                    t for t in tree_flatten((margs, mkwargs))[0] if isinstance(t, torch.Tensor) and t.requires_grad]
                if outs and wrt:
                    torch.autograd.grad(outs, wrt, [torch.ones_like(o) for o in outs], allow_unused=True)
    finally:
        audit._side_counting = False
    return counter.result


class CompiledCalls:
    """The meta-device count of a compiled call, once a key. A part of ComputeAudit
    (auditor/tracking/audit.py), whose state it shares."""

    def _count_compiled(self, target: torch.nn.Module, key: tuple, args: tuple, kwargs: dict,
                        grad: bool) -> StepCount | None:
        """A compiled call's own work, counted on meta copies (once a key); None, warned and marked
        incomplete, where the meta device cannot run it (the call still runs compiled)."""
        count = self._side_counts.get(key)
        if count is None:
            try:
                count = _count_on_meta(self, target, args, kwargs, grad)
            except Exception as exc:  # data-dependent code, an argument meta copies cannot stand for
                self.uncovered.add(_UNCOUNTED_COMPILED)
                self.cache.setdefault(key, CallCost(0, 0, 0, 0, 0))
                self._warn_once("compiled-meta", f"auditor: a call of the compiled model could not be counted on "
                                f"the meta device ({type(exc).__name__}: {str(exc)[:200]}); its FLOPs are missing "
                                "and the figure is marked incomplete")
                return None
            self._side_counts[key] = count
        return count
