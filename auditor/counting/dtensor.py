"""Tensor parallelism: ops on DTensors counted once per model replica, each rank's local work apart.

torch's FlopCounterMode sees an op on DTensors with their global shapes on every rank of the
mesh, so summed over a tensor-parallel group of T ranks it charges the model T times. DTensor
programs are SPMD: every rank of an op's mesh runs the same op, each on its own shard (or all on
the same replica). So an op on DTensors is charged here its global FLOPs *apportioned over the
ranks of its mesh* (``share``: the global figure divided by the mesh's size, the remainder one
FLOP each to the first ranks), and the ranks of the mesh sum to the global op once, exactly.
A 2-D mesh (data parallel x tensor parallel, FSDP2 + TP) computes on the tensor-parallel
sub-mesh: each data-parallel replica has its own, so replicas still add up.

Ops on plain tensors under tensor parallelism are of two kinds, which shapes cannot tell apart:

- a shard of the model's work: attention over one rank's heads, on the local output of a
  column-parallel layer. Each rank's count is its part; the group sums to the whole;
- work every rank of the group repeats on the same data: a layer left unparallelized, on the
  replicated output of a row-parallel layer. The model needs it once per replica.

They are told apart by provenance (``Provenance``): a plain tensor is *varying* across the group
when it comes from a DTensor sharded or partial on its mesh (``to_local()``, or the local result
of a DTensor op), or from a scatter-type collective over the group, or from any op with a varying
input; an all-reduce, all-gather or broadcast over the group makes its result the same on every
rank again. A plain op with FLOPs whose tensor inputs are none of them varying, in a run whose
model computes on DTensors, is charged ``share`` of its FLOPs on the group's mesh (the *replica*:
the mesh of the ops on DTensors with FLOPs). Each rank's local work (what its kernels ran: the
local op DTensor dispatched, seen by ``LocalWork`` while it runs, and the whole of a repeated
plain op) minus its share is kept in ``StepCount.local_extra``: hardware work, never model
compute.
"""
from __future__ import annotations

import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from auditor.counting.formulas import Split, lookup

_DTENSOR_MODULE = "torch.distributed.tensor"
# Functional and in-place collectives: after these every rank of the group holds the same tensor,
# or each its own part.
_SAME_AFTER = ("all_reduce", "allreduce", "all_gather", "allgather", "_allgather_base", "broadcast")
_OWN_AFTER = ("reduce_scatter", "_reduce_scatter_base", "all_to_all", "alltoall", "scatter")


def dtensor_class():
    """DTensor, if torch.distributed.tensor has been imported (a model that uses DTensors has)."""
    module = sys.modules.get(_DTENSOR_MODULE)
    return getattr(module, "DTensor", None) if module is not None else None


def share(flops: int, size: int, index: int) -> int:
    """This rank's part of ``flops`` split over ``size`` ranks (it is number ``index``): the parts
    of all ranks add up to ``flops`` exactly."""
    whole, rest = divmod(flops, size)
    return whole + (1 if index < rest else 0)


class Replica:
    """The ranks of a device mesh and this rank's place among them."""

    __slots__ = ("ranks", "size", "index")

    def __init__(self, mesh):
        ranks = tuple(int(r) for r in mesh.mesh.flatten().tolist())
        me = _global_rank()
        self.ranks, self.size = ranks, len(ranks)
        self.index = ranks.index(me) if me in ranks else 0

    def __eq__(self, other) -> bool:
        return isinstance(other, Replica) and other.ranks == self.ranks

    __hash__ = None  # type: ignore[assignment]


def _global_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _shards(dtensor) -> bool:
    """A DTensor whose local tensor differs between the ranks of its mesh (sharded or partial)."""
    return any(p.is_shard() or p.is_partial() for p in dtensor.placements)


class Provenance:
    """Which plain tensors differ between the ranks of the tensor-parallel group (see the module
    docstring). Marks are weak: a tensor's mark goes with it."""

    def __init__(self):
        from torch.utils.weak import WeakTensorKeyDictionary

        self.varying = WeakTensorKeyDictionary()
        self.replica: Replica | None = None
        self.meshes_disagree = False
        self._groups: dict = {}

    def any_varying(self, tensors) -> bool:
        varying = self.varying
        return any(varying.get(t, False) for t in tensors)

    def mark(self, tensors, value: bool) -> None:
        for t in tensors:
            try:
                self.varying[t] = value
            except TypeError:  # a tensor subclass without weak references
                pass

    def note_dtensor(self, dtensor) -> None:
        """A DTensor's local tensor: varying when the DTensor is sharded or partial."""
        local = getattr(dtensor, "_local_tensor", None)
        if local is not None:
            self.mark((local,), _shards(dtensor))

    def assumption(self) -> str:
        replica = self.replica
        text = (f"tensor parallel: ops on DTensors counted at their global shapes and shared over the "
                f"{replica.size} ranks of their mesh (the model's compute once per replica); plain-tensor work on "
                f"data that comes from no sharded DTensor (a layer left unparallelized) taken as repeated by every "
                f"rank of the group and shared likewise; each rank's local work beyond its share is hardware work")
        if self.meshes_disagree:
            text += ("; the model computes on more than one device mesh, so plain-tensor work is charged whole to "
                     "every rank that runs it (an overcount where it is repeated)")
        return text

    def note_compute_mesh(self, mesh) -> Replica:
        """An op on DTensors with FLOPs ran on ``mesh``: the first such mesh is the replica's."""
        replica = Replica(mesh)
        if self.replica is None:
            self.replica = replica
        elif replica != self.replica:
            self.meshes_disagree = True
        return replica

    def after_plain_op(self, func, args, kwargs, inputs: list, outputs: list) -> None:
        """Carry the marks from an op's inputs to its outputs (a collective over the replica's
        ranks decides them itself)."""
        name = getattr(func, "__name__", "")
        if (getattr(func, "namespace", "") in ("_c10d_functional", "c10d", "c10d_functional")
                and self.replica is not None and _collective_group(args, kwargs, self._groups) == self.replica.ranks):
            base = name.split(".")[0].rstrip("_")
            if base.startswith(_SAME_AFTER):
                self.mark(outputs + inputs[:1], False)
                return
            if base.startswith(_OWN_AFTER):
                self.mark(outputs, True)
                return
        if self.any_varying(inputs):
            self.mark(outputs, True)


def _collective_group(args, kwargs, cache: dict) -> tuple | None:
    """The global ranks of the process group a collective's arguments name, or None."""
    import torch.distributed as dist

    for a in list(args) + list(kwargs.values()):
        key = a if isinstance(a, str) else id(a)
        if key in cache:
            return cache[key]
        pg = None
        if isinstance(a, str):
            try:
                from torch.distributed.distributed_c10d import _resolve_process_group

                pg = _resolve_process_group(a)
            except Exception:
                continue
        elif isinstance(a, dist.ProcessGroup) or type(a).__name__ == "ProcessGroup":
            pg = a
        if pg is not None:
            try:
                ranks = tuple(int(r) for r in dist.get_process_group_ranks(pg))
            except Exception:
                ranks = None
            cache[key] = ranks
            return ranks
    return None


class LocalWork(TorchDispatchMode):
    """Pushed while DTensor runs one op: it sees the local ops DTensor dispatches on this rank's
    shards (it leaves the op on DTensors to DTensor, returning NotImplemented) and adds up their
    FLOPs by the same formulas. Fake tensors (DTensor's sharding propagation) are not work."""

    def __init__(self, dtensor):
        super().__init__()
        self.flops = 0
        self._dtensor = dtensor

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        from torch._subclasses.fake_tensor import FakeTensor

        dtensor = self._dtensor
        leaves = [a for a in _flat(args, kwargs) if isinstance(a, torch.Tensor)]
        if any(isinstance(a, dtensor) for a in leaves):
            return NotImplemented
        out = func(*args, **kwargs)
        if isinstance(func, torch._ops.OpOverload) and not any(isinstance(a, FakeTensor) or a.is_meta for a in leaves):
            formula = lookup(func._overloadpacket)
            if formula is not None:
                flops = formula(*args, **kwargs, out_val=out)
                if isinstance(flops, Split):
                    flops = flops[0] + flops[1]
                self.flops += int(flops or 0)
        return out


def _flat(args, kwargs) -> list:
    from torch.utils._pytree import tree_flatten

    return tree_flatten((args, kwargs))[0]


# ----- to_local: where a plain tensor leaves a DTensor (the column-parallel output, the
# row-parallel output after its all-reduce); its mark follows the DTensor's placements.
_ACTIVE: list[Provenance] = []
_ORIGINAL_TO_LOCAL = None


def _to_local(self, *args, **kwargs):
    out = _ORIGINAL_TO_LOCAL(self, *args, **kwargs)
    if _ACTIVE and isinstance(out, torch.Tensor):
        varying = _shards(self)
        for provenance in _ACTIVE:
            provenance.mark((out,), varying)
    return out


def watch_to_local(provenance: Provenance) -> None:
    """While ``provenance`` is active, DTensor.to_local marks what it returns."""
    global _ORIGINAL_TO_LOCAL
    cls = dtensor_class()
    if cls is None:
        return
    if not _ACTIVE:
        _ORIGINAL_TO_LOCAL = cls.to_local
        cls.to_local = _to_local
    _ACTIVE.append(provenance)


def unwatch_to_local(provenance: Provenance) -> None:
    if provenance not in _ACTIVE:
        return
    _ACTIVE.remove(provenance)
    cls = dtensor_class()
    if not _ACTIVE and cls is not None and _ORIGINAL_TO_LOCAL is not None:
        cls.to_local = _ORIGINAL_TO_LOCAL
