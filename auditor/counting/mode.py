"""The dispatch-level counter: one mode object that looks each aten op up in the registry.

Modelled on torch's ``FlopCounterMode``, with three differences that training compute needs:
ops of a compute class with no formula are recorded, never dropped; each op is charged to the
innermost module (by its path in the original model, so a block keeps its name when the
repeated-block counter moves it); and experts that run densely and mask the result are
charged at their routed (top-k) share, the rest kept apart as executed hardware work.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.module_tracker import ModuleTracker

from .classify import is_compute_class
from .formulas import Split, lookup, op_name
from .result import StepCount

aten = torch.ops.aten

# Metadata queries: no arithmetic, and answering them here would break tensor subclasses.
_PASSTHROUGH = {
    aten.sym_is_contiguous.default, aten.is_contiguous.default, aten.is_contiguous.memory_format,
    aten.is_strides_like_format.default, aten.is_non_overlapping_and_dense.default,
    aten.size.default, aten.sym_size.default, aten.stride.default, aten.sym_stride.default,
    aten.storage_offset.default, aten.sym_storage_offset.default, aten.numel.default,
    aten.sym_numel.default, aten.dim.default, torch.ops.prim.layout.default,
}


class _NamedTracker(ModuleTracker):
    """torch's ModuleTracker with names fixed up front: the path of each module in the model."""

    def __init__(self, names: dict[torch.nn.Module, str]):
        super().__init__()
        for mod, name in names.items():
            self._known_modules[mod] = name
            self._seen_modules.add(mod)


def module_paths(model: torch.nn.Module) -> dict[torch.nn.Module, str]:
    return {mod: name for name, mod in model.named_modules(remove_duplicate=False)}


class CountingMode:
    """Counts the passes run inside it into ``self.result``.

    ``dense_experts`` maps a module path to (k, E): that module computes all E experts for
    every token and masks all but k, so k/E of its FLOPs are model compute.
    """

    def __init__(self, model: torch.nn.Module | None = None,
                 dense_experts: dict[str, tuple[int, int]] | None = None,
                 names: dict[torch.nn.Module, str] | None = None):
        self.result = StepCount()
        names = names if names is not None else (module_paths(model) if model is not None else {})
        self._depth = {name: (name.count(".") + 1 if name else 0) for name in names.values()}
        self._depth["Global"] = -1
        self._tracker = _NamedTracker(names)
        self._dense = dense_experts or {}
        self._dispatch = _Dispatch(self)

    # The module tracker stays outside the dispatch mode: the mode re-enters itself to count
    # decomposed ops, and that must not reset the tracker's backward hooks.
    def __enter__(self):
        self._tracker.__enter__()
        self._dispatch.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self._dispatch.__exit__(*exc)
        finally:
            self._tracker.__exit__()

    def _innermost(self) -> str:
        parents = self._tracker.parents
        if len(parents) == 1:
            return ""
        return max(parents, key=lambda p: self._depth.get(p, 0))

    def _note_uncovered(self, name: str) -> None:
        if is_compute_class(name):
            self.result.uncovered[name] += 1

    def _record(self, op: str, flops: int | Split) -> None:
        recomputed = 0
        if isinstance(flops, Split):
            flops, recomputed = flops
        phase = "backward" if torch._C._current_graph_task_id() != -1 else "forward"
        module = self._innermost()
        key = (phase, module, op)
        for parent in self._tracker.parents if self._dense else ():
            if parent in self._dense:
                k, e = self._dense[parent]
                routed = flops * k // e
                self.result.executed[key] += flops - routed
                flops = routed
                break
        self.result.records[key] += flops
        if recomputed:
            self.result.executed[key] += recomputed


class _Dispatch(TorchDispatchMode):
    def __init__(self, counter: CountingMode):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PASSTHROUGH:
            return NotImplemented
        if isinstance(func, torch._ops.HigherOrderOperator):
            self.counter._note_uncovered(str(func.name()))
            return NotImplemented
        packet = func._overloadpacket
        formula = lookup(packet)
        if formula is None and func is not torch.ops.prim.device.default:
            # Composite ops (matmul, einsum, linear...) come back as the ops they are made of.
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if formula is None:
            self.counter._note_uncovered(op_name(packet))
            return out
        flops = formula(*args, **kwargs, out_val=out)
        if flops:
            self.counter._record(op_name(packet), flops)
        return out
