"""Sparse operands (COO, CSR, CSC, BSR, BSC): products counted from the stored elements.

A shape formula sees a 1000 x 1000 sparse matrix with 5,000 stored elements as a million
entries, and counts a multiply-add for every zero. The counting mode gives any op with a sparse
operand to the formula here (``SPARSE``), which counts 2 x stored x (the dense operand's other
dimension), or returns None where that is not the work: both operands sparse (the work depends
on where the two patterns meet) or a sparse tensor on the meta device (whose stored elements
are unknown: ``.to("meta")`` keeps none). A declined op is reported uncovered, so the count stays
a lower bound. These formulas also take dense operands (stored = every element).

What torch runs for ``torch.sparse.mm(A, B)`` with A sparse (torch 2.13, CPU), checked by
tests/test_sparse_and_rnn.py: forward ``_sparse_addmm(zeros, A, B)``; backward ``mm(A^T, grad)``
(A^T sparse, CSR turning CSC), ``mm`` of dense tensors for B's own inputs and, where A's values
require grad, ``sparse_sampled_addmm`` (CSR) or a dense ``mm(grad, B^T)`` then ``sparse_mask``
(COO), whose model share the counting mode takes as 2 x stored x inner dimension.
"""
from __future__ import annotations

import torch

from auditor.counting.formulas.registry import sparse_formula

aten = torch.ops.aten

DENSE_LAYOUTS = frozenset({torch.strided, torch._mkldnn})
_COMPRESSED = frozenset({torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc})


def stored_elements(t: torch.Tensor) -> int | None:
    """Elements a kernel reads (COO values include their dense dimensions); None if unknown."""
    if t.layout in DENSE_LAYOUTS:
        return t.numel()
    if t.is_meta:
        return None
    if t.layout is torch.sparse_coo:
        return t._values().numel()
    if t.layout in _COMPRESSED:
        return t.values().numel()
    return None


def product_flop(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """a (..., M, K) @ b (..., K, N) with at most one operand sparse: every stored element of a
    meets a row of N in b; every stored element of b a column of M in a."""
    if a.layout not in DENSE_LAYOUTS and b.layout not in DENSE_LAYOUTS:
        return None
    if a.layout not in DENSE_LAYOUTS or b.layout in DENSE_LAYOUTS:
        stored = stored_elements(a)
        return None if stored is None else 2 * stored * b.shape[-1]
    stored = stored_elements(b)
    return None if stored is None else 2 * stored * a.shape[-2]


@sparse_formula(aten.mm, aten.bmm, aten.hspmm)
def sparse_mm_flop(a, b, *args, out_val=None, **kwargs) -> int | None:
    return product_flop(a, b)


@sparse_formula(aten.addmm, aten.addmm_, aten._sparse_addmm, aten.sspaddmm, aten.baddbmm)
def sparse_addmm_flop(_self, a, b, *args, out_val=None, **kwargs) -> int | None:
    # The added term is elementwise, outside the counting convention, as for dense addmm.
    return product_flop(a, b)


@sparse_formula(aten.mv)
def sparse_mv_flop(a, v, *args, out_val=None, **kwargs) -> int | None:
    # a (M, K) sparse times a dense vector: one multiply-add per stored element.
    stored = stored_elements(a) if v.layout in DENSE_LAYOUTS else None
    return None if stored is None else 2 * stored


@sparse_formula(aten.addmv)
def sparse_addmv_flop(_self, a, v, *args, out_val=None, **kwargs) -> int | None:
    return sparse_mv_flop(a, v)


@sparse_formula(aten.sparse_sampled_addmm)
def sampled_addmm_flop(pattern, a, b, *args, out_val=None, **kwargs) -> int | None:
    """(a @ b) at the stored positions of ``pattern`` only: one dot product of length K each."""
    if a.layout not in DENSE_LAYOUTS or b.layout not in DENSE_LAYOUTS:
        return None
    stored = stored_elements(pattern)
    return None if stored is None else 2 * stored * a.shape[-1]
