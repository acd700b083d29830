"""What one call of a watched model is: its key, its cached cost, its phase, and the live record of
where its ops went while a window counts it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._pytree import tree_flatten

from auditor.counting.result import StepCount

if TYPE_CHECKING:
    from auditor.tracking.audit import ComputeAudit


_POSITIONS = 16  # calls per backward told apart by position; later ones share the last key


_UNCOUNTED_BACKWARD = "tracker: a backward of a call first seen without one"


_UNCOUNTED_COMPILED = "tracker: a call of a compiled model that the meta device could not count"


_OFF_THE_LINE = "tracker: calls predicted from a line of counted lengths that a later count left"


_UNSEEN_CALLS = "tracker: gradients from calls of the model that its hooks did not see"


_next_sequence_nr = torch._C._autograd._get_sequence_nr  # autograd nodes made so far on this thread


_queue_callback = torch.autograd.Variable._execution_engine.queue_callback


def _tensor_key(t: torch.Tensor) -> tuple:
    return t.shape, t.dtype, t.requires_grad, t.device


def _signature(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple:
    """What decides a call's FLOPs: input shapes, dtypes, grad flags, devices; training and grad mode.

    Runs on every call, so the common shapes (tensors passed positionally or by keyword) skip
    the general tree walk."""
    if all(type(a) is torch.Tensor for a in args) and all(type(v) is torch.Tensor for v in kwargs.values()):
        return (module.training, torch.is_grad_enabled(), tuple(_tensor_key(a) for a in args),
                tuple((k, _tensor_key(v)) for k, v in kwargs.items()))
    leaves, _ = tree_flatten((args, kwargs))
    shapes = tuple((tuple(t.shape), str(t.dtype), t.requires_grad, t.device.type) if isinstance(t, torch.Tensor)
                   else (type(t).__name__, _opaque_state(t)) for t in leaves)
    return module.training, torch.is_grad_enabled(), shapes


def _opaque_state(value: Any) -> Any:
    """What an argument that is not a tensor tells of a call's work: a scalar as it is; a key-value
    cache (Hugging Face's Cache, which torch's pytree does not open) by the positions each layer
    holds, since attention over them grows with every decoding step; anything else nothing."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    positions = getattr(value, "get_seq_length", None)
    if callable(positions):
        try:
            return tuple(positions(i) for i in range(len(value))) if hasattr(value, "__len__") else positions()
        except Exception:  # not a cache after all: say nothing rather than fail the call
            return None
    return None


@dataclass(frozen=True)
class CallCost:
    """The cached ints of one call key.

    ``forward``: the call's own work while it ran (its forward, and any backward it ran inside,
    as a Lightning step with manual optimization does); ``tail``: work outside the model with
    grad on after the call and before the next one (the loss); ``backward``: what each backward
    that reaches the call's outputs adds (its own backward and its tail's), None when no backward
    was seen; ``recompute``: forward work rerun by that backward (checkpointing), not training.
    """

    forward: int
    forward_recompute: int
    tail: int
    backward: int | None
    recompute: int
    extra: int = 0           # under tensor parallelism: local work beyond this rank's share, forward and tail
    backward_extra: int = 0  # the same, of each backward


class Phase:
    """``with run.phase("rollout"):``: the calls made inside (and their backward, when it comes)
    belong to that phase; nested phases, the innermost. Re-entrant and reusable."""

    __slots__ = ("audit", "name", "_outer")

    def __init__(self, audit: "ComputeAudit", name: str):
        self.audit, self.name, self._outer = audit, name, []

    def __enter__(self) -> "Phase":
        self._outer.append(self.audit._phase)
        self.audit._phase = self.name
        return self

    def __exit__(self, *exc) -> None:
        self.audit._phase = self._outer.pop()


def _phase_name(name: str) -> str:
    from auditor.rules.rule_file import phase_name  # the names rule files' counts_phases take

    try:
        return phase_name(name)
    except ValueError as exc:
        raise ValueError(f"phase: {exc}") from None


class _Call:
    """One call of a watched model; while a window counts it live, where its ops went."""

    __slots__ = ("key", "grad", "live", "gid", "step", "lo", "hi", "own", "tail", "settled", "reach_base",
                 "per_reach", "irregular", "outputs", "dead", "ref", "forward", "forward_recompute", "forward_extra",
                 "phase", "side", "__weakref__")

    def __init__(self, key: tuple, grad: bool, live: bool, step: int, phase: str, side: StepCount | None = None):
        self.key, self.grad, self.live, self.step, self.phase = key, grad, live, step, phase
        self.gid = None          # the graph task (backward) that last reached this call
        self.side = side         # a compiled call: its own work as counted on the meta device, not live
        if live:
            self.lo = _next_sequence_nr()
            self.hi = None       # set when the call returns: nodes lo <= n < hi are its own
            self.own, self.tail = StepCount(), StepCount()
            self.settled = [0] * 6  # own work, recompute, extra; tail's: charged so far
            self.reach_base = (0, 0, 0)
            self.per_reach: list[tuple[int, int, int]] = []
            self.irregular = False  # backward work came in a backward that did not reach it
            self.outputs = False
            self.dead = False
            self.ref = None


def _work(count: StepCount) -> tuple[int, int, int]:
    """(forward + backward, recompute, local work beyond the share) of a count: what it adds to a
    figure, to recomputation, and (tensor parallelism) to hardware work."""
    extra = sum(v for (phase, _, _), v in count.local_extra.items() if phase != "recompute") \
        if count.local_extra else 0
    return count.forward + count.backward, count.recompute, extra


def _backward_work(call: _Call) -> tuple[int, int, int]:
    """A live call's backward, recomputation and local work beyond its share since it returned,
    its own and its tail's (what it ran inside its forward is in ``call.forward``: its own forward
    plus any backward in there)."""
    own, tail = call.own, call.tail
    inner_backward = call.forward - own.forward
    return (own.backward - inner_backward + tail.backward,
            own.recompute - call.forward_recompute + tail.recompute,
            _work(own)[2] - call.forward_extra + _work(tail)[2] - _forward_extra(tail))


def _forward_extra(count: StepCount) -> int:
    return sum(v for (phase, _, _), v in count.local_extra.items() if phase == "forward") if count.local_extra else 0


def _mark_dead(call_ref, _hook_ref) -> None:
    call = call_ref()
    if call is not None:
        call.dead = True


def _grad_outputs(output: Any) -> list[torch.Tensor]:
    """The output tensors a backward can start from; shallow for a tensor or a mapping (HF)."""
    if type(output) is torch.Tensor:
        return [output] if output.requires_grad else []
    values = output.values() if hasattr(output, "values") else None
    if values is None or not all(v is None or type(v) is torch.Tensor or isinstance(v, (tuple, list)) for v in values):
        values, _ = tree_flatten(output)
    return [t for t in values if type(t) is torch.Tensor and t.requires_grad]
