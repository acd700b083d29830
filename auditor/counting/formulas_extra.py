"""Formulas for the ops that the architecture sweep met beyond torch's registry.

Registered into the one registry of ``formulas.py`` (imported at its end), so lookup is
unchanged. Found by ``benchmarks/architectures.py``; see docs/architectures.md for what each
architecture runs and what stays outside the counting convention.

Triangular solves: the chunked gated delta rule (Qwen3-Next, Qwen3.5, OLMo-hybrid, Lara,
Qwen4-exp) builds its WY representation with ``torch.linalg.solve_triangular``. The op's name
holds no matmul word, so without a formula it was dropped silently rather than reported.
In-place and fused matmul variants have their own overload packets, so torch's formulas for
``addmm`` and friends do not reach them.
"""
from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import addmm_flop, baddbmm_flop, bmm_flop

from .formulas import formula

aten = torch.ops.aten


def triangular_solve_count(n: int, rhs: int, batch: int, unitriangular: bool) -> int:
    """Forward/back substitution with an n x n triangular matrix for ``rhs`` right-hand sides.

    Unknown i needs i multiply-adds (2i operations) and, unless the diagonal is implicitly one,
    a division: n(n - 1) + n = n^2 per right-hand side, or n(n - 1) when unitriangular. This is
    LAPACK's TRSM count (n^2 per column), made exact for the unit diagonal.
    """
    per_column = n * (n - 1) + (0 if unitriangular else n)
    return batch * rhs * per_column


@formula(aten.linalg_solve_triangular)
def linalg_solve_triangular_flop(a_shape, b_shape, *args, upper=None, left=True, unitriangular=False,
                                 out_shape=None, **kwargs) -> int:
    # left: A X = B with X (*, n, k); right: X A = B with X (*, k, n). Batch dims broadcast.
    rows, cols = out_shape[-2], out_shape[-1]
    n, rhs = (rows, cols) if left else (cols, rows)
    return triangular_solve_count(n, rhs, math.prod(out_shape[:-2]), bool(unitriangular))


@formula(aten.triangular_solve)
def triangular_solve_flop(b_shape, a_shape, upper=True, transpose=False, unitriangular=False,
                          out_shape=None, **kwargs) -> int:
    # The deprecated spelling: solves A X = B, B (*, n, k); out_shape is (solution, A's copy).
    solution = out_shape[0]
    return triangular_solve_count(solution[-2], solution[-1], math.prod(solution[:-2]), bool(unitriangular))


@formula(aten.addmm_, aten._addmm_activation)
def addmm_inplace_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    # _addmm_activation is addmm with a fused GELU/ReLU epilogue: the activation is elementwise.
    return addmm_flop(self_shape, a_shape, b_shape)


@formula(aten.baddbmm_)
def baddbmm_inplace_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return baddbmm_flop(self_shape, a_shape, b_shape)


@formula(aten.addbmm_)
def addbmm_inplace_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return bmm_flop(a_shape, b_shape)


@formula(aten.addmv_)
def addmv_inplace_flop(self_shape, a_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]
