"""Estimation methods. Each returns an auditor.estimate.Estimate.

- counted (``counted.py``): the counting engine on the model (docs/counting.md); imports torch,
  so it is loaded on first use.
- analytic (``analytic.py``): 6ND, Kaplan, PaLM and Chinchilla Appendix F formulas, exact ints.
- hardware (``hardware.py``): accelerators x hours x dense peak x utilization, from the cited
  table auditor/data/accelerators.yaml.

docs/methods.md describes the three.
"""
from __future__ import annotations

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
           "get_accelerator"]
