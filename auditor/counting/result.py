"""StepCount: the FLOPs of one training step, broken down by phase, module and operator."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

PHASES = ("forward", "backward", "recompute")
Key = tuple[str, str, str]  # (phase, module path, operator)


@dataclass
class StepCount:
    """Counts of one step, Python ints throughout.

    ``records`` hold the model's compute: what the training step needs, with mixture-of-experts
    layers counted through the k experts each token visits. ``executed`` holds what the
    hardware ran where that differs (experts computed densely and masked); it is reported
    apart and never enters training compute. ``local_extra`` holds, under tensor parallelism,
    this rank's local work beyond its share of the model's compute (``records``): a layer left
    unparallelized runs whole on every rank of the group, and is charged to each its share
    (counting/dtensor.py). A rank's entry may be negative where shards are uneven; the group's
    sum is not.
    """

    records: Counter = field(default_factory=Counter)
    executed: Counter = field(default_factory=Counter)
    uncovered: Counter = field(default_factory=Counter)  # op name -> times met
    assumptions: list[str] = field(default_factory=list)
    tokens: int | None = None  # tokens in the step's batch, where known
    model_class: str | None = None  # the class counted, where it was built from a config (hf.py)
    local_extra: Counter = field(default_factory=Counter)

    # -- totals
    def phase(self, name: str) -> int:
        return sum(v for (p, _, _), v in self.records.items() if p == name)

    @property
    def forward(self) -> int:
        return self.phase("forward")

    @property
    def backward(self) -> int:
        return self.phase("backward")

    @property
    def total(self) -> int:
        return self.forward + self.backward

    @property
    def hardware_total(self) -> int:
        """What the kernels executed: model compute plus recomputation, dense-masked expert work
        and, under tensor parallelism, the work this rank repeats or runs beyond its share."""
        return self.total + self.recompute + sum(self.executed.values()) + sum(self.local_extra.values())

    @property
    def recompute(self) -> int:
        """Forward work rerun in the backward (activation checkpointing): hardware work only."""
        return self.phase("recompute")

    @property
    def complete(self) -> bool:
        return not self.uncovered

    @property
    def flops_per_token(self) -> int | None:
        return None if not self.tokens else self.total // self.tokens

    # -- breakdowns
    def by_op(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (p, _, op), v in self.records.items():
            out.setdefault(op, dict.fromkeys(PHASES, 0))[p] += v
        return dict(sorted(out.items(), key=lambda kv: -sum(kv[1].values())))

    def by_module(self, depth: int | None = None) -> dict[str, dict[str, int]]:
        """FLOPs by module path, each op charged to the innermost module running it.

        ``depth`` folds deeper paths into their ancestor at that depth ('' is the root).
        """
        out: dict[str, dict[str, int]] = {}
        for (p, mod, _), v in self.records.items():
            if depth is not None and mod:
                mod = ".".join(mod.split(".")[:depth])
            out.setdefault(mod, dict.fromkeys(PHASES, 0))[p] += v
        return dict(sorted(out.items()))

    def to_json(self) -> dict:
        """Everything, losslessly, for the count cache (from_json reads it back)."""
        return {"records": [[*k, v] for k, v in sorted(self.records.items())],
                "executed": [[*k, v] for k, v in sorted(self.executed.items())],
                "uncovered": dict(sorted(self.uncovered.items())),
                "assumptions": list(self.assumptions), "tokens": self.tokens, "model_class": self.model_class,
                **({"local_extra": [[*k, v] for k, v in sorted(self.local_extra.items())]} if self.local_extra else {})}

    @classmethod
    def from_json(cls, data: dict) -> "StepCount":
        return cls(Counter({tuple(r[:3]): int(r[3]) for r in data["records"]}),
                   Counter({tuple(r[:3]): int(r[3]) for r in data["executed"]}),
                   Counter({k: int(v) for k, v in data["uncovered"].items()}),
                   list(data["assumptions"]), data["tokens"], data.get("model_class"),
                   Counter({tuple(r[:3]): int(r[3]) for r in data.get("local_extra", [])}))

    def to_dict(self) -> dict:
        return {
            "forward_flops": self.forward,
            "backward_flops": self.backward,
            "total_flops": self.total,
            "hardware_flops": self.hardware_total,
            "tokens": self.tokens,
            "model_class": self.model_class,
            "flops_per_token": self.flops_per_token,
            "complete": self.complete,
            "by_op": self.by_op(),
            "by_module": self.by_module(),
            "uncovered_ops": sorted(self.uncovered),
            "assumptions": list(self.assumptions),
        }
