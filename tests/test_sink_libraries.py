"""The MLflow and W&B sinks against the real libraries, offline: MLflow on a file:// store in
tmp_path, read back with MlflowClient; W&B in offline mode, read back from its run's .wandb log by
wandb's own reader (``wandb leet inspect --json``). Driven by events built by hand, and by a
ComputeAudit that has them as sinks: the exact FLOP figures at the optimizer steps."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from auditor.tracking.sinks import Interval, RunEnded, RunStarted
from auditor.tracking import ComputeAudit
from test_sinks import PER_SAMPLE, STEP, mlp, train

E25 = 10**25
EVENTS = [RunStarted(name="exp1", run_dir="/runs/exp1", rank=0, world_size=8, resumed_at=1000,
                     authorization={"sha256": "ab" * 32, "budget_flops": 3 * E25}),
          Interval(step=1100, total_flops=2**52, flops=2**40, eval_flops=7, phases={"train": 2**52, "eval": 7,
                                                                                     "rollout": 5}, budget_used=0.25),
          Interval(step=1200, total_flops=2**52 + 2**41, flops=2**41, eval_flops=9,
                   phases={"train": 2**52 + 2**41, "eval": 9, "rollout": 6}, budget_used=0.5),
          RunEnded(ending="stopped", step=1200, total_flops=E25 + 1, eval_flops=9, why="crossing tiny-budget")]


def send(sink, events=EVENTS):
    for event in events:
        {RunStarted: sink.started, Interval: sink.interval, RunEnded: sink.ended}[type(event)](event)


# ---------------------------------------------------------------- MLflow
@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")    # MLflow 3 refuses file stores unless told
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_mlflow_sink_logs_intervals_at_their_steps_and_the_end_as_tags(mlflow_store):
    from auditor.integrations.mlflow_sink import MLflowSink

    sink = MLflowSink(experiment="compute")
    send(sink)
    run = mlflow_store.get_run(sink.run_id)
    assert run.info.status == "KILLED"                        # the sink made the run: a stop ends it so
    assert history(mlflow_store, sink.run_id, "compute_total_flops") == [(1100, 2**52), (1200, 2**52 + 2**41)]
    assert history(mlflow_store, sink.run_id, "compute_interval_flops") == [(1100, 2**40), (1200, 2**41)]
    assert history(mlflow_store, sink.run_id, "compute_eval_flops") == [(1100, 7), (1200, 9)]
    assert history(mlflow_store, sink.run_id, "compute_rollout_flops") == [(1100, 5), (1200, 6)]
    assert history(mlflow_store, sink.run_id, "compute_budget_used") == [(1100, 0.25), (1200, 0.5)]
    assert "compute_train_flops" not in run.data.metrics      # train is total_flops
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("compute_")}
    assert tags == {"compute_run": "exp1", "compute_world_size": "8", "compute_run_dir": "/runs/exp1",
                    "compute_resumed_at_step": "1000", "compute_authorization_sha256": "ab" * 32,
                    "compute_authorization_budget_flops": str(3 * E25), "compute_ending": "stopped",
                    "compute_steps": "1200", "compute_total_flops_exact": "10000000000000000000000001",
                    "compute_eval_flops_exact": "9", "compute_why": "crossing tiny-budget"}
    assert mlflow_store.get_experiment_by_name("compute").experiment_id == run.info.experiment_id


def test_mlflow_sink_on_a_tracked_run_and_on_a_run_of_the_users(mlflow_store):
    import mlflow

    from auditor.integrations.mlflow_sink import MLflowSink

    model, opt = mlp()
    with mlflow.start_run() as users:                         # the active run: logged there, left open
        with ComputeAudit(model=model, optimizer=opt, flush_every_steps=1, sinks=[MLflowSink(prefix="audit.")]):
            train(model, opt, 3, eval_after=2)
        assert mlflow_store.get_run(users.info.run_id).info.status == "RUNNING"
    assert history(mlflow_store, users.info.run_id, "audit.total_flops") == [(1, STEP), (2, 2 * STEP), (3, 3 * STEP)]
    assert history(mlflow_store, users.info.run_id, "audit.eval_flops") == [(1, 0), (2, 0), (3, 4 * PER_SAMPLE)]
    tags = mlflow_store.get_run(users.info.run_id).data.tags
    assert (tags["audit.ending"], tags["audit.total_flops_exact"], tags["audit.steps"]) == ("finished", str(3 * STEP), "3")
    given = mlflow_store.create_run("0").info.run_id          # a run named by id
    model, opt = mlp()
    with ComputeAudit(model=model, optimizer=opt, flush_every_steps=1, sinks=[MLflowSink(given)]):
        train(model, opt, 2)
    assert history(mlflow_store, given, "compute_total_flops") == [(1, STEP), (2, 2 * STEP)]
    assert mlflow_store.get_run(given).info.status == "RUNNING"   # not this sink's to end


def test_a_sink_without_its_library_names_the_extra(monkeypatch):
    from auditor.integrations.mlflow_sink import MLflowSink
    from auditor.integrations.wandb_sink import WandbSink

    for module, sink in (("mlflow", MLflowSink), ("wandb", WandbSink)):
        monkeypatch.setitem(sys.modules, module, None)        # as if not installed
        with pytest.raises(ImportError, match=rf"^this sink needs {module}: pip install 'auditor\[{module}\]'$"):
            sink()


# ---------------------------------------------------------------- Weights & Biases
@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for name, value in (("WANDB_MODE", "offline"), ("WANDB_DIR", str(tmp_path)), ("WANDB_SILENT", "true"),
                        ("WANDB_CONSOLE", "off"), ("WANDB_DISABLE_GIT", "true")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield wandb
    if wandb.run is not None:
        wandb.run.finish()


def wandb_records(tmp_path) -> list[dict]:
    """Every record of the one offline run's .wandb log, by wandb's own reader."""
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def logged(records, prefix="compute_") -> list[dict]:
    return [{k: v for k, v in r["history"]["item"].items() if k.startswith(prefix)}
            for r in records if r.get("type") == "history"]


def summary(records) -> dict:
    out: dict = {}
    for r in records:
        if r.get("type") == "summary":
            out.update(r["summary"].get("update", {}))
    return out


def test_wandb_sink_logs_intervals_against_the_step_and_the_end_in_the_summary(wandb_offline, tmp_path):
    from auditor.integrations.wandb_sink import WandbSink

    sink = WandbSink(project="compute", dir=str(tmp_path))
    send(sink)
    records = wandb_records(tmp_path)
    assert logged(records) == [
        {"compute_step": 1100, "compute_total_flops": 2**52, "compute_interval_flops": 2**40, "compute_eval_flops": 7,
         "compute_rollout_flops": 5, "compute_budget_used": 0.25},
        {"compute_step": 1200, "compute_total_flops": 2**52 + 2**41, "compute_interval_flops": 2**41,
         "compute_eval_flops": 9, "compute_rollout_flops": 6, "compute_budget_used": 0.5}]
    ended = {k: v for k, v in summary(records).items() if k.startswith("compute_") and not k.endswith("_flops")
             and k not in ("compute_step", "compute_budget_used")}
    assert ended == {"compute_ending": "stopped", "compute_steps": "1200",
                     "compute_total_flops_exact": "10000000000000000000000001", "compute_eval_flops_exact": "9",
                     "compute_why": "crossing tiny-budget"}
    config: dict = {}
    for r in records:                                       # the run record's config, then its updates
        if r.get("type") in ("run", "config"):
            config.update((r["run"] if r["type"] == "run" else r)["config"].get("update", {}))
    assert {k: v for k, v in config.items() if k.startswith("compute_")} == {
        "compute_run": "exp1", "compute_world_size": "8", "compute_run_dir": "/runs/exp1",
        "compute_resumed_at_step": "1000", "compute_authorization_sha256": "ab" * 32,
        "compute_authorization_budget_flops": str(3 * E25)}
    assert next(r["exit"]["exit_code"] for r in records if r.get("type") == "exit") == 1   # a stop: not a clean exit


def test_wandb_sink_on_a_tracked_run(wandb_offline, tmp_path):
    from auditor.integrations.wandb_sink import WandbSink

    model, opt = mlp()
    sink = WandbSink(project="compute", dir=str(tmp_path))
    with ComputeAudit(tmp_path / "run", model, opt, flush_every_steps=1, sinks=[sink]) as run:
        train(model, opt, 3, eval_after=2)
    records = wandb_records(tmp_path)
    assert [(h["compute_step"], h["compute_total_flops"], h["compute_interval_flops"], h["compute_eval_flops"])
            for h in logged(records)] == [(1, STEP, STEP, 0), (2, 2 * STEP, STEP, 0), (3, 3 * STEP, STEP, 4 * PER_SAMPLE)]
    said = summary(records)
    assert (said["compute_ending"], said["compute_total_flops_exact"]) == ("finished", str(run.total_flops))
    assert said["compute_dossier"] == str(tmp_path / "run" / "dossier.json")
    assert next(r["exit"]["exit_code"] for r in records if r.get("type") == "exit") == 0
    assert run.total_flops == 3 * STEP
