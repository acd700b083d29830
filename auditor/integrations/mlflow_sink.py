"""An MLflow sink: a tracked run's compute on an MLflow run (docs/integrations.md).

``ComputeAudit(..., sinks=[MLflowSink()])``: each ledger interval becomes metrics at the optimizer
step (``compute_total_flops``, ``compute_interval_flops``, ``compute_eval_flops``, other phases,
``compute_budget_used``); the start and the end become tags (the run's name, world size, resume
step and authorization; how it ended, and its totals exact as text). The run is ``run_id``, else
the active MLflow run, else one this sink creates in ``experiment`` (and terminates at the end,
FINISHED, KILLED for a run the guard stopped, FAILED for a crash). The tracking URI is MLflow's
own (``MLFLOW_TRACKING_URI``, ``mlflow.set_tracking_uri``) unless ``tracking_uri`` is given.
"""
from __future__ import annotations

import time

from auditor.integrations.sink_values import ended_tags, interval_metrics, require, started_tags
from auditor.tracking.sinks import Interval, RunEnded, RunStarted

_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "crashed": "FAILED"}


class MLflowSink:
    def __init__(self, run_id: str | None = None, *, experiment: str | None = None, prefix: str = "compute_",
                 tracking_uri: str | None = None):
        self._mlflow = require("mlflow", "mlflow")
        self.client = self._mlflow.MlflowClient(tracking_uri=tracking_uri)
        self.run_id, self.experiment, self.prefix = run_id, experiment, prefix
        self._owned = False                  # this sink created the run: it ends it too

    def _run(self, name: str) -> str:
        if self.run_id is not None:
            return self.run_id
        active = self._mlflow.active_run()
        if active is not None and self.experiment is None:
            return active.info.run_id
        found = self.client.get_experiment_by_name(self.experiment) if self.experiment else None
        experiment_id = found.experiment_id if found else (self.client.create_experiment(self.experiment)
                                                           if self.experiment else "0")
        self._owned = True
        return self.client.create_run(experiment_id, run_name=name).info.run_id

    def started(self, event: RunStarted) -> None:
        self.run_id = self._run(event.name)
        for key, value in started_tags(event, self.prefix).items():
            self.client.set_tag(self.run_id, key, value)

    def interval(self, event: Interval) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, event.step) for k, v in interval_metrics(event, self.prefix).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def ended(self, event: RunEnded) -> None:
        for key, value in ended_tags(event, self.prefix).items():
            self.client.set_tag(self.run_id, key, value)
        if self._owned:
            self.client.set_terminated(self.run_id, _STATUS[event.ending])
