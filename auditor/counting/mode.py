"""The dispatch-level counter: one mode object that looks each aten op up in the registry.

Modelled on torch's ``FlopCounterMode``, with three differences that training compute needs:
ops of a compute class with no formula are recorded, never dropped; each op is charged to the
innermost module (by its path in the original model, so a block keeps its name when the
repeated-block counter moves it); and experts that run densely and mask the result are
charged at their routed (top-k) share, the rest kept apart as executed hardware work.
An op with a sparse operand is counted by its sparse formula (from the stored elements) or
reported uncovered: a shape formula would count every zero of the sparse matrix.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from auditor.counting.classify import is_compute_class
from auditor.counting.dtensor import (
    LocalWork,
    Provenance,
    Replica,
    dtensor_class,
    share,
    unwatch_to_local,
    watch_to_local,
)
from auditor.counting.formulas import (
    SPARSE,
    Split,
    bind_names,
    lookup,
    op_name,
    shadowed_torch_formulas,
)
from auditor.counting.formulas.sparse import DENSE_LAYOUTS, stored_elements
from auditor.counting.metacache import MetaCache
from auditor.counting.result import Key, StepCount
from auditor.counting.scope import ModuleScope, module_paths, phase_now

aten = torch.ops.aten

# Metadata queries: no arithmetic, and answering them here would break tensor subclasses.
_PASSTHROUGH = {
    aten.sym_is_contiguous.default, aten.is_contiguous.default, aten.is_contiguous.memory_format,
    aten.is_strides_like_format.default, aten.is_non_overlapping_and_dense.default,
    aten.size.default, aten.sym_size.default, aten.stride.default, aten.sym_stride.default,
    aten.storage_offset.default, aten.sym_storage_offset.default, aten.numel.default,
    aten.sym_numel.default, aten.dim.default, torch.ops.prim.layout.default,
}


class CountingMode:
    """Counts the passes run inside it into ``self.result``.

    ``dense_experts`` maps a module path to (k, E): that module computes all E experts for
    every token and masks all but k, so k/E of its FLOPs are model compute. ``meta_cache``: a
    MetaCache to share between the counted runs of one step (default: its own).

    Ops on DTensors (tensor parallelism) are charged once per model replica, and plain ops that
    every rank of the tensor-parallel group repeats likewise; each rank's local work beyond its
    share goes to ``result.local_extra`` (counting/dtensor.py). ``provenance``: the marks to keep
    between counts of one run (None: its own, made when the modules counted hold DTensors; False:
    the caller knows they hold none, made only if an op on DTensors comes).
    """

    def __init__(self, model: torch.nn.Module | None = None,
                 dense_experts: dict[str, tuple[int, int]] | None = None,
                 names: dict[torch.nn.Module, str] | None = None, meta_cache: MetaCache | None = None,
                 provenance: Provenance | bool | None = None):
        self.result = StepCount()
        names = names if names is not None else (module_paths(model) if model is not None else {})
        self._dtensor = dtensor_class()
        if provenance is None:
            provenance = self._dtensor is not None and _holds_dtensors(names, self._dtensor) and Provenance()
        self.tp = provenance or None
        self._pending: list[tuple[StepCount, Key, int, int]] = []  # repeated plain ops before the mesh is known
        self.canonical_checks = 0  # boolean reads of meta data answered True (see _Dispatch)
        self.meta = meta_cache or MetaCache()   # meta kernels answered by metadata (counting/metacache.py)
        self._scope = ModuleScope(names)
        self._dense = dense_experts or {}
        self._dispatch = _Dispatch(self)
        # The backward's last dense mm: (its output, record key, FLOPs, inner dimension).
        self._last_product: tuple[weakref.ref, Key, int, int] | None = None
        bind_names()
        for op in shadowed_torch_formulas():
            self.result.assumptions.append(
                f"{op}: a FLOP formula registered with torch after auditor's own is not used; auditor's is")

    # The module scope stays outside the dispatch mode: the mode re-enters itself to count
    # decomposed ops, and that must not reset the scope.
    def __enter__(self):
        self._scope.__enter__()
        if self.tp is not None:
            watch_to_local(self.tp)
        self._dispatch.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self._dispatch.__exit__(*exc)
        finally:
            self._scope.__exit__()
            if self.tp is not None:
                unwatch_to_local(self.tp)
                self.resolve_pending()

    def _model_work(self) -> bool:
        """Whether the op being recorded is part of a model call (the tracker's optimizer step is not)."""
        return True

    def resolve_pending(self) -> None:
        """Repeated plain ops met before any op on DTensors named the mesh: shared over it now,
        or, where the call used no DTensor (no tensor parallelism), charged whole."""
        pending, self._pending = self._pending, []
        replica = self.tp.replica if self.tp is not None else None
        for result, key, flops, hardware_only in pending:
            self._charge_part(result, key, flops, hardware_only, replica, None)

    def _charge_part(self, result: StepCount, key: Key, flops: int, hardware_only: int, replica,
                     local: int | None) -> None:
        """This rank's share of an op every rank of ``replica`` runs a part of (``local``: what
        its kernels ran; None: the whole op, a repeated plain op)."""
        if replica is None or replica.size == 1:
            result.records[key] += flops
            if hardware_only:
                result.executed[key] += hardware_only
            return
        mine, mine_hw = share(flops, replica.size, replica.index), share(hardware_only, replica.size, replica.index)
        result.records[key] += mine
        if mine_hw:
            result.executed[key] += mine_hw
        extra = (flops + hardware_only if local is None else local) - mine - mine_hw
        if extra:
            result.local_extra[key] += extra

    def _dtensor_op(self, func, packet, formula, args, kwargs):
        """An op on DTensors: its global FLOPs shared over its mesh, its local work apart."""
        if self.tp is None:
            self.tp = Provenance()
            watch_to_local(self.tp)  # left at __exit__ with the others
        local = LocalWork(self._dtensor)
        with local:
            out = func(*args, **kwargs)
        dtensor = self._dtensor
        for t in tree_flatten(out)[0]:
            if isinstance(t, dtensor):
                self.tp.note_dtensor(t)
        if formula is None:
            if _compute_class(packet):
                self._note_uncovered(op_name(packet))
            return out
        flops = formula(*args, **kwargs, out_val=out)
        if flops:
            mesh = next(a for a in (*args, *kwargs.values()) if isinstance(a, dtensor)).device_mesh
            had = self.tp.replica
            # The mesh a model call computes on is its replica's; an optimizer's arithmetic on
            # FSDP2's DTensors (sharded over data-parallel ranks) names none.
            replica = self.tp.note_compute_mesh(mesh) if self._model_work() else Replica(mesh)
            self._record(op_name(packet), flops, part=(replica, local.flops))
            if had is None and self._pending:
                self.resolve_pending()
        return out

    def _note_uncovered(self, name: str) -> None:
        """An op of a compute class met with no formula (the caller has checked the class)."""
        self.result.uncovered[name] += 1

    def _note_unmodelled(self, name: str, layout: torch.layout) -> None:
        """An op whose formula cannot count this operand kind: reported, never counted as dense."""
        self.result.uncovered[f"{name} ({str(layout).removeprefix('torch.')} operand)"] += 1

    def _record(self, op: str, flops: int | Split, part: tuple | None = None) -> Key:
        """``part``: (Replica, local FLOPs) for an op on DTensors; (None, None) for a plain op every
        rank of the tensor-parallel group repeats."""
        hardware_only = 0
        if isinstance(flops, Split):
            flops, hardware_only = flops
        phase = phase_now(self._scope)
        module = self._scope.current()
        key = (phase, module, op)
        for path in self._dense:
            if module == path or module.startswith(path + "."):
                k, e = self._dense[path]
                routed = flops * k // e
                self.result.executed[key] += flops - routed
                flops = routed
                break
        if part is not None:
            replica, local = part
            if replica is None:
                replica = self.tp.replica if not self.tp.meshes_disagree else None
                if replica is None and not self.tp.meshes_disagree:  # no op on DTensors yet: the mesh comes later
                    self._pending.append((self.result, key, flops, hardware_only))
                    return key
            self._charge_part(self.result, key, flops, hardware_only, replica, local)
            return key
        self.result.records[key] += flops
        if hardware_only:
            self.result.executed[key] += hardware_only
        return key

    def _note_product(self, out: torch.Tensor, key: Key, flops: int, inner: int) -> None:
        self._last_product = (weakref.ref(out), key, flops, inner) if key[0] == "backward" else None

    def _sampled_product(self, dense: torch.Tensor, mask: torch.Tensor) -> None:
        """``sparse_mask(mm(a, b), mask)`` in the backward: torch's gradient for the values of a
        COO matrix. The model needs (a @ b) only where ``mask`` stores an element, 2 x stored x
        inner dimension, as CSR's ``sparse_sampled_addmm`` computes it; the rest of the dense
        product is hardware work."""
        last, self._last_product = self._last_product, None
        if last is None or last[0]() is not dense:
            return
        _, key, flops, inner = last
        stored = stored_elements(mask)
        if stored is not None and 2 * stored * inner < flops:
            extra = flops - 2 * stored * inner
            self.result.records[key] -= extra
            self.result.executed[key] += extra


def meta_check_answer(func, args) -> bool:
    """Whether ``func`` is a boolean read of meta data: a model asking "is any position padded?
    is the batch packed? may the mask be skipped?" of its inputs, which meta tensors cannot
    answer. Both counting and the uncounted probe answer True, as for unpadded, unpacked
    sequences: the full-context step the count is for. Integer reads still fail."""
    return func is aten._local_scalar_dense.default and args[0].is_meta and args[0].dtype == torch.bool


class MetaAnswers(TorchDispatchMode):
    """Runs a model on meta as the counting mode would, counting nothing (a cheap probe)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if meta_check_answer(func, args):
            return True
        return func(*args, **(kwargs or {}))


# Per-op facts that never change, asked on every op a counted step runs (a recurrent model's
# time loop runs tens of thousands): looked up once each.
_DECOMPOSES: dict = {}
_COMPUTE_CLASS: dict = {}


def _decomposes(func) -> bool:
    """Whether ``func`` has a CompositeImplicitAutograd kernel, as func.decompose checks."""
    found = _DECOMPOSES.get(func)
    if found is None:
        key = torch._C.DispatchKey.CompositeImplicitAutograd
        found = _DECOMPOSES[func] = func is not torch.ops.prim.device.default and (
            key in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key))
    return found


def _compute_class(packet) -> bool:
    found = _COMPUTE_CLASS.get(packet)
    if found is None:
        found = _COMPUTE_CLASS[packet] = is_compute_class(op_name(packet))
    return found


class _Dispatch(TorchDispatchMode):
    def __init__(self, counter: CountingMode):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PASSTHROUGH:
            return NotImplemented
        if meta_check_answer(func, args):
            self.counter.canonical_checks += 1
            return True
        if isinstance(func, torch._ops.HigherOrderOperator):
            if is_compute_class(str(func.name())):
                self.counter._note_uncovered(str(func.name()))
            return NotImplemented
        packet = func._overloadpacket
        formula = lookup(packet)
        if formula is None and _decomposes(func):
            # Composite ops (matmul, einsum, linear...) come back as the ops they are made of.
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        counter = self.counter
        dtensor, tp = counter._dtensor, counter.tp
        if dtensor is not None and (formula is not None or tp is not None) and _any_of(dtensor, args, kwargs):
            return counter._dtensor_op(func, packet, formula, args, kwargs)
        out = counter.meta.run(func, args, kwargs)
        replicated = None if tp is None else _replicated_work(tp, func, args, kwargs, out, formula)
        if formula is None:
            if func is aten.sparse_mask.default:
                self.counter._sampled_product(args[0], args[1])
            if _compute_class(packet):
                self.counter._note_uncovered(op_name(packet))
            return out
        layout = _unmodelled_layout(args, kwargs)
        if layout is None:
            flops = formula(*args, **kwargs, out_val=out)
        else:
            sparse = SPARSE.get(packet)
            flops = sparse(*args, **kwargs, out_val=out) if sparse is not None else None
            if flops is None:
                self.counter._note_unmodelled(op_name(packet), layout)
                return out
        if flops:
            key = self.counter._record(op_name(packet), flops, replicated)
            if packet is aten.mm and layout is None:
                self.counter._note_product(out, key, flops, args[0].shape[-1])
        return out


def _replicated_work(tp, func, args, kwargs, out, formula) -> tuple | None:
    """Under tensor parallel, a plain op's marks carried to its outputs; (None, None) when its work
    is the same on every rank of the group (shared over it), else None."""
    inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
    tp.after_plain_op(func, args, kwargs, inputs, [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)])
    return (None, None) if formula is not None and not tp.any_varying(inputs) else None


def _unmodelled_layout(args: tuple, kwargs: dict) -> torch.layout | None:
    """The first operand layout shape formulas do not model (sparse, jagged), or None."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.layout not in DENSE_LAYOUTS:
            return a.layout
    for a in kwargs.values():
        if isinstance(a, torch.Tensor) and a.layout not in DENSE_LAYOUTS:
            return a.layout
    return None


def _any_of(cls, args: tuple, kwargs: dict) -> bool:
    """Whether an operand (top level: products take tensors, not lists of them) is a ``cls``."""
    return any(isinstance(a, cls) for a in args) or any(isinstance(v, cls) for v in kwargs.values())


def _holds_dtensors(names: dict, dtensor) -> bool:
    """Whether the modules counted hold DTensor parameters (tensor parallelism, FSDP2)."""
    return any(isinstance(p, dtensor) for mod in names for p in mod._parameters.values() if p is not None)
