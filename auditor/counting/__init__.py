"""Exact FLOPs of a training step of a PyTorch model: see docs/counting.md."""
from .formulas import REGISTRY, formula, lookup
from .optimizer import optimizer_flops
from .result import StepCount
from .step import CountingError, count_step

__all__ = ["REGISTRY", "formula", "lookup", "StepCount", "CountingError", "count_step", "optimizer_flops"]
