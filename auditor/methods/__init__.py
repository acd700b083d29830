"""Estimation methods. Each returns an auditor.estimate.Estimate.

- counted (``counted.py``): the counting engine on the model (docs/counting.md); imports torch,
  so it is loaded on first use.
- analytic (``analytic.py``): 6ND, Kaplan, PaLM and Chinchilla Appendix F formulas, exact ints.
- hardware (``hardware.py``): accelerators x hours x dense peak x utilization, from the cited
  table auditor/data/accelerators.yaml.

docs/methods.md describes the three.
"""
from __future__ import annotations

from typing import Any

from auditor.methods.analytic import (
    analytic_estimate,
    chinchilla_appendix_f,
    chinchilla_forward,
    kaplan,
    palm,
    six_nd,
)
from auditor.methods.hardware import (
    Accelerator,
    UnknownAccelerator,
    accelerator_ids,
    find_accelerator,
    get_accelerator,
    hardware_estimate,
)

__all__ = ["analytic_estimate", "six_nd", "kaplan", "palm", "chinchilla_forward", "chinchilla_appendix_f",
           "hardware_estimate", "Accelerator", "UnknownAccelerator", "accelerator_ids", "find_accelerator",
           "get_accelerator", "counted_estimate"]


def __getattr__(name: str) -> Any:
    if name == "counted_estimate":  # keeps `import auditor.methods` free of torch
        from auditor.methods.counted import counted_estimate
        return counted_estimate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
