"""One registry of FLOP formulas: torch's own (live), plus ours, grouped by family.

Each formula is a small pure function of shapes returning an int, registered on the ops it
covers with ``@formula(op, ...)``, as in ``torch/utils/flop_counter.py``: adding an op is adding
one function. A multiply-add is two operations, as in torch's formulas and vendor peak figures.

  registry.py     lookup (ours, then torch's live registry), registration and its refusals
  matmul.py       grouped (MoE) matmuls, mv, dot, addbmm, integer mm, bilinear, in-place variants
  attention.py    CPU flash attention; fused attention backward split from its recomputation
  convolution.py  grouped convolution backward (replaces torch's); oneDNN convolution
  recurrent.py    oneDNN LSTM layers, forward and backward (the gradients the model needs)
  solve.py        triangular solves
  sparse.py       products with a sparse operand, counted from the stored elements

Ours that replace torch's formula for the same op are in ``REPLACES_TORCH`` with the reason,
and listed in docs/counting.md.
"""
from __future__ import annotations

from auditor.counting.formulas import (  # noqa: F401  (they register)
           attention,
           convolution,
           matmul,
           recurrent,
           solve,
           sparse,
)
from auditor.counting.formulas.registry import (
           BY_NAME,
           OURS,
           REPLACES_TORCH,
           SPARSE,
           TORCH_REGISTRY,
           AllFormulas,
           Split,
           bind_names,
           formula,
           lookup,
           op_name,
           shadowed_torch_formulas,
           sparse_formula,
)

REGISTRY = AllFormulas()  # every formula, ours over torch's: a live, read-only view

__all__ = ["BY_NAME", "OURS", "REGISTRY", "REPLACES_TORCH", "SPARSE", "TORCH_REGISTRY", "Split", "bind_names",
           "formula", "lookup", "op_name", "shadowed_torch_formulas", "sparse_formula"]
