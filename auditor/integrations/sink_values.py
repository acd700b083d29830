"""What the MLflow and W&B sinks send, named once: one event's figures as metrics (numbers, by
step) and as exact text (an int of 10^25 FLOPs is past a float's 53 bits: metrics stores keep
doubles, so the exact figure goes beside them as a string), and the lazy import of the library."""
from __future__ import annotations

import importlib
from typing import Any

from auditor.tracking.sinks import Interval, RunEnded, RunStarted


def require(module: str, extra: str) -> Any:
    """The optional library, imported when a sink is made (never by importing auditor)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this sink needs {module}: pip install 'auditor[{extra}]'") from None


def interval_metrics(event: Interval, prefix: str) -> dict[str, float | int]:
    """An interval's figures: the run's training FLOPs so far, this interval's, evaluation so far,
    each other phase so far, and the share of the authorized budget used where one is held."""
    out: dict[str, float | int] = {f"{prefix}total_flops": event.total_flops, f"{prefix}interval_flops": event.flops,
                                   f"{prefix}eval_flops": event.eval_flops}
    out.update({f"{prefix}{phase}_flops": v for phase, v in sorted(event.phases.items()) if phase not in ("train", "eval")})
    if event.budget_used is not None:
        out[f"{prefix}budget_used"] = event.budget_used
    return out


def started_tags(event: RunStarted, prefix: str) -> dict[str, str]:
    out = {f"{prefix}run": event.name, f"{prefix}world_size": str(event.world_size)}
    if event.run_dir is not None:
        out[f"{prefix}run_dir"] = event.run_dir
    if event.resumed_at is not None:
        out[f"{prefix}resumed_at_step"] = str(event.resumed_at)
    auth = event.authorization or {}
    for key in ("sha256", "budget_flops"):
        if auth.get(key) is not None:
            out[f"{prefix}authorization_{key}"] = str(auth[key])
    return out


def ended_tags(event: RunEnded, prefix: str) -> dict[str, str]:
    """How the run ended and its totals, exact (strings: ints of any size)."""
    out = {f"{prefix}ending": event.ending, f"{prefix}steps": str(event.step),
           f"{prefix}total_flops_exact": str(event.total_flops), f"{prefix}eval_flops_exact": str(event.eval_flops)}
    if event.dossier is not None:
        out[f"{prefix}dossier"] = event.dossier
    if event.why is not None:
        out[f"{prefix}why"] = event.why[:500]    # MLflow's tag values are bounded; the ledger keeps the rest
    return out
