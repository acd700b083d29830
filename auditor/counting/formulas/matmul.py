"""Matrix products torch's registry lacks: grouped (mixture-of-experts) matmuls, vector products,
integer matmuls, nn.Bilinear's kernel, and the in-place and fused variants of addmm and friends,
which have overload packets of their own, so torch's formulas for ``addmm`` do not reach them.
"""
from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import addmm_flop, baddbmm_flop, bmm_flop

from auditor.counting.formulas.registry import formula

aten = torch.ops.aten


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


@formula(aten.addmv, aten.addmv_)
def addmv_flop(self_shape, a_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


@formula(aten.dot, aten.vdot)
def dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0]


@formula(aten.addbmm, aten.addbmm_)
def addbmm_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return bmm_flop(a_shape, b_shape)


@formula(aten.addmm_, aten._addmm_activation)
def addmm_inplace_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    # _addmm_activation is addmm with a fused GELU/ReLU epilogue: the activation is elementwise.
    return addmm_flop(self_shape, a_shape, b_shape)


@formula(aten.baddbmm_)
def baddbmm_inplace_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return baddbmm_flop(self_shape, a_shape, b_shape)


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
