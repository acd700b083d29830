"""One registry of FLOP formulas: torch's own, plus the ops training needs that torch lacks.

Each formula is a small pure function of shapes returning an int, registered on the ops it
covers, exactly as in ``torch/utils/flop_counter.py``: adding an op is adding one function.
A multiply-add is two operations, as in torch's formulas and vendor peak figures.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
from torch.utils.flop_counter import (
    _efficient_attention_backward_flop,
    _flash_attention_backward_flop,
    bmm_flop,
    conv_flop_count,
    flop_registry as _torch_registry,
    sdpa_backward_flop_count,
    sdpa_flop_count,
    shape_wrapper,
)

aten = torch.ops.aten

# Overload packet -> formula(*args, out_val=..., **kwargs) -> int
REGISTRY: dict[Any, Callable[..., int]] = dict(_torch_registry)
# Custom ops of libraries that may not be imported yet ("namespace::name" -> formula).
REGISTRY_BY_NAME: dict[str, Callable[..., int]] = {}


def formula(*targets: Any, raw: bool = False):
    """Register ``fn`` on each target: an aten overload packet or a "namespace::op" name.

    Shape formulas receive shapes (tensors replaced by their ``.shape``) and ``out_shape``;
    ``raw`` formulas receive the tensors themselves.
    """

    def register(fn: Callable[..., int]) -> Callable[..., int]:
        wrapped = fn if raw else shape_wrapper(fn)
        for target in targets:
            if isinstance(target, str):
                REGISTRY_BY_NAME[target] = wrapped
            else:
                REGISTRY[target] = wrapped
        return fn

    return register


def lookup(packet: Any) -> Callable[..., int] | None:
    found = REGISTRY.get(packet)
    if found is None and REGISTRY_BY_NAME:
        found = REGISTRY_BY_NAME.get(op_name(packet).replace(".", "::", 1))
        if found is not None:
            REGISTRY[packet] = found
    return found


class Split(NamedTuple):
    """A kernel's work split into model compute and recomputation (hardware work only)."""
    model: int
    recomputed: int


def op_name(packet: Any) -> str:
    """'aten.mm', 'transformers.grouped_mm_fallback': the name reports and tests use."""
    return str(packet)


# ---------------------------------------------------------------- matrix products


def grouped_mm_count(a_shape, b_shape) -> int:
    """Grouped matmul, as used for mixture-of-experts layers.

    The four layouts of ``aten._grouped_mm`` (a, b -> out):
      2d x 3d: (M, K) x (G, K, N) -> (M, N)        rows of a are split into G groups
      3d x 2d: (G, M, K) x (N, K)^T -> (M, N)      columns split into groups
      3d x 3d: (G, M, K) x (G, K, N) -> (G, M, N)  a plain batched matmul
      2d x 2d: (M, K) x (K, N) -> (G, M, N)        the reduction dim split into groups
    Every row (or column, or reduction slice) belongs to exactly one group, so the total is
    2 * M * K * N with the split dimension counted once, whatever the group sizes. For MoE
    the rows are tokens x k (each token routed to its k experts), so this is the routed
    (top-k) compute, exact for any load balance.
    """
    if len(a_shape) == 2 and len(b_shape) == 3:
        m, k = a_shape
        return 2 * m * k * b_shape[-1]
    if len(a_shape) == 3 and len(b_shape) == 2:
        g, m, k = a_shape
        return 2 * m * k * b_shape[-1]
    if len(a_shape) == 3 and len(b_shape) == 3:
        g, m, k = a_shape
        return 2 * g * m * k * b_shape[-1]
    if len(a_shape) == 2 and len(b_shape) == 2:
        m, k = a_shape
        return 2 * m * k * b_shape[-1]
    raise ValueError(f"grouped mm: unexpected shapes {tuple(a_shape)} x {tuple(b_shape)}")


@formula(aten._grouped_mm)
def grouped_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return grouped_mm_count(a_shape, b_shape)


@formula(aten._scaled_grouped_mm)
def scaled_grouped_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return grouped_mm_count(a_shape, b_shape)


@formula("transformers::grouped_mm_fallback")
def transformers_grouped_mm_fallback_flop(input_shape, weight_shape, offs_shape, out_shape=None, **kw) -> int:
    # (M, K) rows split by offs over weight (G, K, N): the 2d x 3d layout.
    return grouped_mm_count(input_shape, weight_shape)


@formula("transformers::grouped_mm_fallback_backward")
def transformers_grouped_mm_fallback_backward_flop(
    input_shape, weight_shape, offs_shape, grad_shape, *args, out_shape=None, **kw
) -> int:
    # grad_input = grad (M, N) x weight^T per group; grad_weight = input^T x grad per group.
    return 2 * grouped_mm_count(input_shape, weight_shape)


@formula(aten.mv)
def mv_flop(a_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


@formula(aten.addmv)
def addmv_flop(self_shape, a_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


@formula(aten.dot, aten.vdot)
def dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0]


@formula(aten.addbmm)
def addbmm_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return bmm_flop(a_shape, b_shape)


@formula(aten._int_mm, aten._weight_int8pack_mm)
def int_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    # Integer operations count where a rule says "integer or floating-point operations".
    return 2 * a_shape[0] * a_shape[1] * out_shape[-1]


@formula(aten._trilinear)
def trilinear_flop(i1_shape, i2_shape, i3_shape, expand1, expand2, expand3, sumdim, *args, out_shape=None, **kw) -> int:
    """nn.Bilinear's kernel: each input gets size-1 dims inserted, the three broadcast to one
    shape S and the product is summed over ``sumdim``. One multiply-add per element of S:
    for Bilinear(in1, in2, out) on a batch B that is 2 B out in1 in2, the leading term of
    computing (x1 W) then its product with x2."""
    def expanded(shape, dims):
        shape = list(shape)
        for d in sorted(dims):
            shape.insert(d, 1)
        return shape

    full = torch.broadcast_shapes(*(tuple(expanded(s, e)) for s, e in
                                    ((i1_shape, expand1), (i2_shape, expand2), (i3_shape, expand3))))
    return 2 * math.prod(full)


def _rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape) -> int:
    """Input and recurrent matmuls over every time step: 2 x steps x batch x (|W_ih| + |W_hh|),
    the gate count (LSTM 4, GRU 3, plain RNN 1) being in the weights' first dimension."""
    steps_x_batch = math.prod(input_shape[:-1])
    return 2 * steps_x_batch * (math.prod(w_ih_shape) + math.prod(w_hh_shape))


@formula(aten.mkldnn_rnn_layer)
def mkldnn_rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kw) -> int:
    return _rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape)


@formula(aten.mkldnn_rnn_layer_backward)
def mkldnn_rnn_layer_backward_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kw) -> int:
    # Gradients for the inputs and the recurrent state, and for both weights: twice the forward.
    return 2 * _rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape)


# ---------------------------------------------------------------- attention


@formula(aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_fused_attention_overrideable)
def cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # Full QK^T and AV over the context: causal masking is a stated assumption, not a discount.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def attention_backward(total: int, d_qk: int, d_v: int) -> Split:
    """Split a fused attention backward into model compute and the recomputed scores.

    Fused kernels (flash, memory-efficient, cuDNN, CPU flash) do not keep the attention matrix:
    their backward recomputes QK^T, so torch's formula counts five matmuls, 2.5x the forward.
    The model's backward is the four gradient matmuls, 2x the forward, as in the math path,
    PaLM's 12LHQT and every other layer; the recomputed QK^T is hardware work, kept apart like
    activation checkpointing. Per (batch x head), with n = s_q * s_k, torch's total is
    2n(3 d_qk + 2 d_v) and the recomputed part 2n d_qk.
    """
    recomputed = total * d_qk // (3 * d_qk + 2 * d_v)
    return Split(total - recomputed, recomputed)


@formula(
    aten._scaled_dot_product_flash_attention_for_cpu_backward,
    aten._scaled_dot_product_fused_attention_overrideable_backward,
    aten._scaled_dot_product_efficient_attention_backward,
    aten._scaled_dot_product_flash_attention_backward,
    aten._scaled_dot_product_cudnn_attention_backward,
)
def fused_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> Split:
    total = sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
    return attention_backward(total, query_shape[-1], value_shape[-1])


def _low_level_backward(torch_formula: Callable[..., int]) -> Callable[..., Split]:
    def split(grad_out, query, key, value, *args, **kwargs) -> Split:
        total = torch_formula(grad_out, query, key, value, *args, **kwargs)
        return attention_backward(total, query.shape[-1], value.shape[-1])
    return split


formula(aten._flash_attention_backward, raw=True)(_low_level_backward(_flash_attention_backward_flop))
formula(aten._efficient_attention_backward, raw=True)(_low_level_backward(_efficient_attention_backward_flop))


@formula(aten.convolution_backward)
def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """Input and weight gradients of a convolution, each as many FLOPs as the forward.

    torch's formula (2.13) counts the weight gradient as a dense convolution over all input
    channels, ``groups`` times too many: a depthwise convolution's weight gradient came out
    C times its true cost. Same computation, divided by ``groups``.
    """
    def t(shape):
        return [shape[1], shape[0]] + list(shape[2:])

    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:
        src, kernel = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        flops += conv_flop_count(t(src), t(kernel), t(out_shape[1]), transposed=False) // groups
    return flops


def conv_output_numel_flop(x_shape, w_shape, out_shape) -> int:
    """2 x output elements x (input channels per group x kernel volume)."""
    return 2 * math.prod(out_shape) * math.prod(w_shape[1:])


@formula(aten.mkldnn_convolution)
def mkldnn_conv_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_output_numel_flop(x_shape, w_shape, out_shape)

from . import formulas_extra  # noqa: E402,F401  (registers more formulas into REGISTRY)
