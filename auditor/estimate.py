"""The Estimate (one method's figure, with its assumptions) and the Figures a rule judges.

Counts are Python ints. ``low`` and ``high`` bound the figure under every stated assumption;
verdicts look at the high end where they must be conservative. A preflight (``Preflight.figures()``),
one Estimate (``Estimate.figures()``, a tracked run's among them) and a model's registry history all
hand the rules the same frozen Figures, so the rules never guess what they were given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, get_args

Method = Literal["counted", "analytic", "hardware"]
METHODS: tuple[Method, ...] = get_args(Method)
Developer = Literal["same", "other"]    # who made a modification: the base model's developer or another
DEVELOPERS: tuple[Developer, ...] = get_args(Developer)


@dataclass
class Estimate:
    method: Method
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

    def figures(self, modality: str | None = None, lineage: dict[str, Any] | None = None) -> Figures:
        """What a rule judges of this figure alone (a tracked run's: its phases included)."""
        return Figures.of(self.low, self.flops, self.high, self.method, modality=modality, lineage=lineage,
                          phases=self.phases)

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


def _whole(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Figures.{name} must be an int, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Figures:
    """The figures a rule judges (auditor.rules.evaluate): the run's compute range, what it is, and
    its lineage as the rules read it. ``central`` is the train phase where ``phases`` are given."""
    low: int
    central: int
    high: int
    method: Method | None              # None: a sum over records of several methods (a registry history)
    modality: str | None = None        # the kind of data (run config's MODALITIES); None: not stated
    phases: tuple[tuple[str, int], ...] = ()  # a tracked run's FLOPs by phase name, sorted by name
    modification: bool = False         # it has a lineage: a fine-tune or other modification of a base model
    base_flops: int | None = None      # the base model's compute, where known
    developer: Developer | None = None  # who made the modification (None: not stated)

    def __post_init__(self) -> None:
        for name in ("low", "central", "high"):
            _whole(getattr(self, name), name)
        if not self.low <= self.central <= self.high:
            raise ValueError(f"Figures must hold the central figure: {self.low} <= {self.central} <= {self.high}")
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.developer is not None and self.developer not in DEVELOPERS:
            raise ValueError(f"unknown developer {self.developer!r}; expected one of {', '.join(DEVELOPERS)}")

    @classmethod
    def of(cls, low: int, central: int, high: int, method: Method | None, *, modality: str | None = None,
           lineage: dict[str, Any] | None = None, phases: dict[str, int] | None = None) -> Figures:
        """Figures from a range and a lineage dict (the run config's ``lineage:``, None values unstated)."""
        said = {k: v for k, v in (lineage or {}).items() if v is not None}
        base = said.get("base_compute_flops")
        return cls(low, central, high, method, modality,
                   tuple(sorted((str(k), _whole(v, f"phases[{k!r}]")) for k, v in (phases or {}).items())),
                   bool(said.keys() & {"base_model", "base_compute_flops", "developer"}),
                   int(base) if base is not None else None, said.get("developer"))

    @property
    def by_phase(self) -> dict[str, int]:
        return dict(self.phases)
