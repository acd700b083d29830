"""Time loops on meta: recurrences whose every op is elementwise, run without their loop.

A recurrent model's pure-torch path loops over the sequence in Python, one step a token. Where
every op in that loop is elementwise (no matmul, convolution or attention), it adds no FLOPs by
the counting convention (docs/counting.md), and only two things about it reach the count: the
shapes it returns, and which of its inputs get gradients (the matmuls that made them are
counted in the backward). So, on the meta device and for the count only, such a loop is replaced
by one elementwise expression of the same inputs and output shapes: exactly the same count, in
one step instead of thousands. Each replacement is checked equal to a CPU count of the original
loop in tests/test_recurrences.py.

RWKV's WKV (transformers' ``rwkv_linear_attention_cpu``): exp, maximum, multiply, add and divide
over the state, token by token: 146 s for one 1,024-token sequence of the default config before
the meta-kernel cache, 21 s after, and a few seconds with this.
"""
from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator

import torch


def _rwkv_wkv(time_decay, time_first, key, value, state=None, return_state=False):
    """The shapes and gradient paths of rwkv_linear_attention_cpu, without its loop over time:
    output (B, T, C) in key's dtype, from all four inputs; the state, where asked for, three
    (B, C) float32 tensors from the last token and the state given."""
    k = key.float()
    decay = -torch.exp(time_decay)
    output = ((k + time_first) * decay * value).to(key.dtype)
    if return_state or state is not None:
        last = k[:, -1] * value[:, -1] + decay
        if state is not None:
            last = last + state[0] + state[1] + state[2]
        state = [last, last + 1, last - 1]
    return output, state


# (module, function name, the model classes that use it, the stand-in)
ELEMENTWISE_LOOPS: list[tuple[str, str, tuple[str, ...], Callable]] = [
    ("transformers.models.rwkv.modeling_rwkv", "rwkv_linear_attention_cpu", ("RwkvSelfAttention",), _rwkv_wkv),
]


@contextlib.contextmanager
def loops_on_meta(model: torch.nn.Module, assumptions: list[str]) -> Iterator[None]:
    """Within the block, the elementwise time loops of a meta model's modules run as one step."""
    on_meta = any(p.is_meta for p in model.parameters())
    classes = {type(m).__name__ for m in model.modules()} if on_meta else set()
    saved = []
    for module_name, name, users, stand_in in ELEMENTWISE_LOOPS:
        if classes & set(users):
            module = importlib.import_module(module_name)
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, stand_in)
            assumptions.append(f"{name}: a loop over time of elementwise ops only (no FLOPs by the convention) run "
                               f"as one elementwise step of the same shapes on meta, an exact replacement")
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
