"""Exact FLOPs of a training step of a PyTorch model: see docs/counting.md.

Names that need torch load on first use, so that reading cached counts (result.py, cache.py)
does not pay for importing torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from auditor.counting.result import StepCount

_LAZY = {"REGISTRY": "formulas", "formula": "formulas", "lookup": "formulas", "optimizer_flops": "optimizer",
         "CountingError": "step", "count_step": "step"}

__all__ = ["StepCount", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
