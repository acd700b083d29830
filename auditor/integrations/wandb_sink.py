"""A Weights & Biases sink: a tracked run's compute on a W&B run (docs/integrations.md).

``ComputeAudit(..., sinks=[WandbSink()])``: each ledger interval is one ``run.log`` of the
figures (``compute_total_flops``, ``compute_interval_flops``, ``compute_eval_flops``, other
phases, ``compute_budget_used``) against ``compute_step``, the optimizer step, declared as their
x-axis (``define_metric``), so that W&B's own step, which the training loop's logging moves, is
left alone; the start goes into ``run.config``; the end into ``run.summary`` (how it ended, and
the totals exact as text). The run is ``run``, else ``wandb.run``, else one this sink starts with
``wandb.init(**init)`` (and finishes at the end, exit code 1 unless the run finished).
"""
from __future__ import annotations

from typing import Any

from auditor.integrations.sink_values import ended_tags, interval_metrics, require, started_tags
from auditor.tracking.sinks import Interval, RunEnded, RunStarted


class WandbSink:
    def __init__(self, run: Any = None, *, prefix: str = "compute_", **init: Any):
        self._wandb = require("wandb", "wandb")
        self.run, self.prefix, self.init = run, prefix, init
        self._owned = False                  # this sink started the run: it finishes it too

    def started(self, event: RunStarted) -> None:
        if self.run is None:
            self.run = self._wandb.run
        if self.run is None:
            self.run = self._wandb.init(**{"name": event.name, **self.init})
            self._owned = True
        self.run.define_metric(f"{self.prefix}step")
        self.run.define_metric(f"{self.prefix}*", step_metric=f"{self.prefix}step")
        self.run.config.update(started_tags(event, self.prefix), allow_val_change=True)

    def interval(self, event: Interval) -> None:
        self.run.log({f"{self.prefix}step": event.step, **interval_metrics(event, self.prefix)})

    def ended(self, event: RunEnded) -> None:
        for key, value in ended_tags(event, self.prefix).items():
            self.run.summary[key] = value
        if self._owned:
            self.run.finish(exit_code=0 if event.ending == "finished" else 1)
