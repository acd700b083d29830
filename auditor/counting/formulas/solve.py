"""Triangular solves, met by the architecture sweep (``benchmarks/architectures.py``; see
docs/architectures.md for what each architecture runs).

The chunked gated delta rule (Qwen3-Next, Qwen3.5, OLMo-hybrid, Lara,
Qwen4-exp) builds its WY representation with ``torch.linalg.solve_triangular``. The op's name
holds no matmul word, so without a formula it was dropped silently rather than reported.
"""
from __future__ import annotations

import math

import torch

from auditor.counting.formulas.registry import formula

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
