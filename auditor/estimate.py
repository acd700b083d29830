"""The Estimate: the one value that flows from preflight and tracking to rules and reports.

Counts are Python ints. ``low`` and ``high`` bound the figure under every stated assumption;
verdicts look at the high end where they must be conservative.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

METHODS = ("counted", "analytic", "hardware")


@dataclass
class Estimate:
    method: str                      # counted | analytic | hardware
    flops: int                       # the central figure
    low: int
    high: int
    flops_per_token: int | None = None
    tokens: int | None = None
    assumptions: list[str] = field(default_factory=list)
    uncovered_ops: list[str] = field(default_factory=list)
    breakdown: dict[str, Any] = field(default_factory=dict)   # by phase / module / op, where known
    details: dict[str, Any] = field(default_factory=dict)     # method-specific figures shown beside
    # A tracked run's FLOPs by phase (train, eval, rollout, ...), ints; ``flops`` is its train figure.
    # Each rule compares the sum of the phases it counts (rules.py). Empty: the figure is training.
    phases: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        for name in ("flops", "low", "high"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Estimate.{name} must be an int, got {type(value).__name__}")
        if not self.low <= self.flops <= self.high:
            raise ValueError(f"Estimate range must hold the figure: {self.low} <= {self.flops} <= {self.high}")
        for name, value in self.phases.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TypeError(f"Estimate.phases[{name!r}] must be an int >= 0, got {value!r}")

    @property
    def complete(self) -> bool:
        return not self.uncovered_ops

    def to_dict(self) -> dict[str, Any]:
        out = {
            "method": self.method,
            "flops": self.flops,
            "low": self.low,
            "high": self.high,
            "assumptions": list(self.assumptions),
            "uncovered_ops": list(self.uncovered_ops),
        }
        if self.flops_per_token is not None:
            out["flops_per_token"] = self.flops_per_token
        if self.tokens is not None:
            out["tokens"] = self.tokens
        if self.breakdown:
            out["breakdown"] = self.breakdown
        if self.details:
            out["details"] = self.details
        if self.phases:
            out["flops_by_phase"] = dict(self.phases)
        return out


def band(flops: int, rel_low: float, rel_high: float) -> tuple[int, int]:
    """(low, high) ints around ``flops``: e.g. band(x, 0.3, 0.3) for +-30 %, in exact arithmetic."""
    low, high = Fraction(str(rel_low)), Fraction(str(rel_high))
    return math.floor(flops * (1 - low)), math.ceil(flops * (1 + high))
