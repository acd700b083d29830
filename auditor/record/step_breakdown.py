"""The dossier's "breakdown of one counted step": of a training step, never of an evaluation pass.

The tracker counts at dispatch level only the calls it has not met (a *window*); an evaluation
pass with a new shape is such a window too, and has no backward. The breakdown is therefore taken
from the latest window that held training calls (grad on, phase ``train``) and saw their
backward, from those calls alone (their forward, the loss after them, their backward), and says
which step it was.
"""
from __future__ import annotations

from typing import Any

from auditor.counting.result import StepCount


def training_breakdown(calls) -> dict[str, Any] | None:
    """By operator and by module (depth 3) of the training calls among ``calls`` (the tracker's
    window), labelled with their step; None when none of them had a backward (an evaluation
    window, or a call whose backward never came)."""
    count, step, n = StepCount(), None, 0
    for call in calls:
        if not call.grad or call.phase != "train":
            continue
        n += 1
        count.records.update(call.own.records)
        count.records.update(call.tail.records)
        step = call.step if step is None else min(step, call.step)
    if step is None or not count.backward:
        return None
    calls_said = "1 call of the model" if n == 1 else f"{n:,} calls of the model"
    return {"by_op": count.by_op(), "by_module": count.by_module(depth=3), "step": step + 1, "calls": n,
            "of": f"training step {step + 1:,}: {calls_said} counted at dispatch level, forward, loss and backward "
                  "(the latest training step with calls of new shapes; calls of the same shapes, in this step or "
                  "later ones, add the same counts)"}
