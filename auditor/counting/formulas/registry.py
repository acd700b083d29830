"""The registry: our formulas layered over torch's live ``flop_registry``.

torch's registry is looked up when an op is counted, never copied, so a formula registered with
``torch.utils.flop_counter.register_flop_formula`` at any time (for a user's own
``torch.library`` op, say) is used. Ours are looked up first; where torch has a formula for the
same op, ours must say why it replaces it (``replaces_torch="..."``): those are listed, with
their reasons, in docs/counting.md. A second formula of ours for one op is refused unless it says
it replaces the first, as torch refuses duplicates.

Formulas for sparse operands are kept apart (``SPARSE``): a shape formula sees a sparse matrix
as dense and would count every zero, so the counting mode gives an op with a sparse operand to
its sparse formula, which counts from the stored elements or declines (returns None).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Callable, NamedTuple

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import shape_wrapper

Formula = Callable[..., Any]

# The very dict torch's register_flop_formula writes into (the module rebinds the name once,
# while it is imported; never after).
TORCH_REGISTRY: dict[Any, Formula] = flop_counter.flop_registry
# Overload packet -> formula(*args, out_val=..., **kwargs) -> int or Split.
OURS: dict[Any, Formula] = {}
# Custom ops of libraries that may not be imported yet ("namespace::name" -> formula).
BY_NAME: dict[str, Formula] = {}
# Names in BY_NAME not yet bound to an op: while any remain, a miss is also looked up by name.
_UNBOUND: set[str] = set()
# Ours that replace torch's formula for the same op on purpose: packet or name -> the reason.
REPLACES_TORCH: dict[Any, str] = {}
# Overload packet -> formula(*tensors, out_val=...) -> int, or None where it cannot be exact.
SPARSE: dict[Any, Formula] = {}


class Split(NamedTuple):
    """A kernel's work split into model compute and hardware-only work (recomputed attention
    scores, gradients the model does not need): the second is reported apart, never counted."""
    model: int
    hardware_only: int


def op_name(packet: Any) -> str:
    """'aten.mm', 'transformers.grouped_mm_fallback': the name reports and tests use."""
    return str(packet)


def formula(*targets: Any, raw: bool = False, replaces_torch: str = "", replaces_ours: bool = False):
    """Register ``fn`` on each target: an aten overload packet or a "namespace::op" name.

    Shape formulas receive shapes (tensors replaced by their ``.shape``) and ``out_shape``;
    ``raw`` formulas receive the tensors themselves. ``replaces_torch`` is the reason for
    replacing a formula torch has for the op; ``replaces_ours`` allows replacing one of ours.
    """
    def register(fn: Formula) -> Formula:
        wrapped = fn if raw else shape_wrapper(fn)
        for target in targets:
            _refuse_duplicate(target, replaces_torch, replaces_ours)
            if isinstance(target, str):
                BY_NAME[target] = wrapped
                _UNBOUND.add(target)
            else:
                OURS[target] = wrapped
            if replaces_torch:
                REPLACES_TORCH[target] = replaces_torch
        return fn

    return register


def sparse_formula(*targets: Any):
    """Register ``fn`` (raw: it receives the tensors) for calls of these ops with a sparse operand."""
    def register(fn: Formula) -> Formula:
        for target in targets:
            if target in SPARSE:
                raise ValueError(f"{op_name(target)}: a sparse-operand formula is already registered")
            SPARSE[target] = fn
        return fn

    return register


def _refuse_duplicate(target: Any, replaces_torch: str, replaces_ours: bool) -> None:
    name = target if isinstance(target, str) else op_name(target)
    if (target in BY_NAME or target in OURS) and not replaces_ours:
        raise ValueError(f"{name}: auditor already has a FLOP formula; pass replaces_ours=True to replace it")
    if not isinstance(target, str) and target in TORCH_REGISTRY and not replaces_torch:
        raise ValueError(f"{name}: torch already has a FLOP formula; pass replaces_torch='why' to replace it")


def lookup(packet: Any) -> Formula | None:
    """The formula for an op: ours, else torch's (live), else a sparse-only op's; None if none.

    A few dict look-ups: the counting mode calls this for every op it sees.
    """
    found = OURS.get(packet)
    if found is None:
        found = TORCH_REGISTRY.get(packet)
        if found is None:
            found = SPARSE.get(packet)
            if found is None and _UNBOUND:
                found = _bind_by_name(packet)
    return found


def _bind_by_name(packet: Any) -> Formula | None:
    name = op_name(packet).replace(".", "::", 1)
    found = BY_NAME.get(name)
    if found is not None:
        OURS[packet] = found
        if name in REPLACES_TORCH:
            REPLACES_TORCH[packet] = REPLACES_TORCH[name]
        _UNBOUND.discard(name)
    return found


def bind_names() -> None:
    """Bind formulas registered by name to their ops where the library defining them is loaded,
    so that looking an op up needs no string work. Called when a count starts."""
    for name in list(_UNBOUND):
        namespace, op = name.split("::", 1)
        try:
            packet = getattr(getattr(torch.ops, namespace), op)
        except (AttributeError, RuntimeError):
            continue                          # not defined (yet): looked up by name when met
        _bind_by_name(packet)


def shadowed_torch_formulas() -> list[str]:
    """Ops for which torch has a formula, registered after ours, that ours hides unannounced."""
    return sorted(op_name(p) for p in OURS if p in TORCH_REGISTRY and p not in REPLACES_TORCH)


class AllFormulas(Mapping):
    """Every formula by op, as looked up at count time (read-only, live): ours over torch's."""

    def __getitem__(self, packet: Any) -> Formula:
        found = lookup(packet)
        if found is None:
            raise KeyError(packet)
        return found

    def __iter__(self) -> Iterator[Any]:
        return iter({**dict.fromkeys(SPARSE), **dict.fromkeys(TORCH_REGISTRY), **dict.fromkeys(OURS)})

    def __len__(self) -> int:
        return len(OURS.keys() | TORCH_REGISTRY.keys() | SPARSE.keys())
