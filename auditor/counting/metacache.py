"""Meta kernels answered from a cache: what makes a loop over time steps cheap to count.

On the meta device an operator's outputs are a function of its inputs' metadata alone (shapes,
strides, dtypes) and of its other arguments: there is no data. torch computes them in Python
(torch/_refs, torch/_prims), about 100-200 us an elementwise op, and a recurrent model that
loops over time steps (RWKV's WKV, xLSTM's and Mamba's pure-torch scans) runs the same ops on
the same shapes thousands of times: 146 s for one 1,024-token RWKV sequence. So the first call
of an op on given metadata runs the meta kernel, and every later one gets fresh tensors of the
same metadata.

Only ops that can be answered that way are: every tensor argument a plain meta tensor, a
functional schema (nothing written in place, no output aliasing an input, so autograd's views
and version counters see what the kernel would give), and tensor outputs only. Everything else
runs as it is. One cache serves one count_step (its shortened runs and the probe alike), so it holds as many
entries as the step has distinct (op, metadata) pairs.
"""
from __future__ import annotations

from typing import Any

import torch

_UNCACHEABLE = object()
_PLAIN = (torch.Tensor, torch.nn.Parameter)     # not subclasses: FakeTensor, DTensor, ... run as they are


def _functional(func) -> bool:
    """No argument written, no output aliasing an input, only tensor outputs."""
    cached = _SCHEMAS.get(func)
    if cached is None:
        schema = func._schema
        cached = (not schema.is_mutable and all(r.alias_info is None for r in schema.returns) and bool(schema.returns)
                  and all(str(r.type) in ("Tensor", "Tensor[]") for r in schema.returns)
                  and not any(a.alias_info is not None for a in schema.arguments))
        _SCHEMAS[func] = cached
    return cached


_SCHEMAS: dict[Any, bool] = {}


_SCALARS = (bool, int, float, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


def _key_of(value: Any) -> Any:
    """A hashable stand-in for an argument: a meta tensor's metadata, scalars with their type
    (True and 1 differ to an op), sequences item by item; _UNCACHEABLE for anything else."""
    kind = type(value)
    if kind in _PLAIN:
        if not value.is_meta:
            return _UNCACHEABLE
        if value.dtype.is_complex:             # conjugate and negative views are bits of metadata too
            return (value.shape, value.stride(), value.dtype, value.storage_offset(), value.is_conj(), value.is_neg())
        return (value.shape, value.stride(), value.dtype, value.storage_offset())
    if kind in _SCALARS:
        return (kind, value)
    if kind is list or kind is tuple:
        parts = tuple(_key_of(v) for v in value)
        return _UNCACHEABLE if _UNCACHEABLE in parts else (kind, parts)
    return _UNCACHEABLE          # a tensor subclass, a SymInt, a generator: run the kernel


def _like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


class MetaCache:
    """Meta kernels' outputs by (op, argument metadata), for one counted step."""

    def __init__(self) -> None:
        self._outputs: dict[tuple, Any] = {}
        self.hits = 0

    def run(self, func, args: tuple, kwargs: dict) -> Any:
        """``func(*args, **kwargs)``, from the cache where it can be answered so."""
        if not _functional(func):
            return func(*args, **kwargs)
        key = (func, _key_of(args), _key_of(tuple(sorted(kwargs.items()))))
        if key[1] is _UNCACHEABLE or key[2] is _UNCACHEABLE:
            return func(*args, **kwargs)
        found = self._outputs.get(key)
        if found is None:
            out = func(*args, **kwargs)
            tensors = (out,) if isinstance(out, torch.Tensor) else out if isinstance(out, (tuple, list)) else ()
            if tensors and all(type(t) is torch.Tensor and t.is_meta for t in tensors):
                self._outputs[key] = out
            return out
        self.hits += 1
        if isinstance(found, torch.Tensor):
            return _like(found)
        return type(found)(_like(t) for t in found)

