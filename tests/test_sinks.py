"""Sinks: what a tracked run hands them (auditor/tracking/sinks.py), at the ledger's moments, with the
ledger's figures; the end of a run that finished, that the guard stopped, that crashed; a sink that
raises is warned about once and dropped. The MLflow and W&B sinks are in test_sink_libraries.py."""
from __future__ import annotations

import warnings

import pytest

from auditor.text import sci
import torch

from auditor.record.ledger import read_ledger
from auditor.tracking.sinks import Interval, RunEnded, RunStarted, Sink
from auditor.tracking import ComputeAudit, ComputeBudgetExceeded

PER_SAMPLE = 2 * 32 * 64 + 2 * 64 * 10          # the MLP's forward FLOPs a sample
TRAIN = 3 * PER_SAMPLE - 2 * 32 * 64             # + backward: the first layer needs no input gradient
STEP = 8 * TRAIN                                 # a step of 8 samples: 96,256 FLOPs


class Recorder:
    def __init__(self):
        self.events: list = []

    def started(self, event):
        self.events.append(event)

    def interval(self, event):
        self.events.append(event)

    def ended(self, event):
        self.events.append(event)


def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def train(model, opt, steps: int, eval_after: int | None = None):
    for i in range(steps):
        model(torch.randn(8, 32)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        if i + 1 == eval_after:
            with torch.no_grad():
                model(torch.randn(4, 32))


def expected_intervals():
    """Three steps of 8 samples, an evaluation of 4 after the second (in the third step's interval)."""
    return [Interval(step=1, total_flops=STEP, flops=STEP, eval_flops=0, phases={"train": STEP, "eval": 0}),
            Interval(step=2, total_flops=2 * STEP, flops=STEP, eval_flops=0, phases={"train": 2 * STEP, "eval": 0}),
            Interval(step=3, total_flops=3 * STEP, flops=STEP, eval_flops=4 * PER_SAMPLE,
                     phases={"train": 3 * STEP, "eval": 4 * PER_SAMPLE}, new_phases={"eval": 4 * PER_SAMPLE})]


@pytest.mark.parametrize("with_ledger", [False, True])
def test_a_tracked_run_hands_its_sinks_the_start_each_interval_and_the_end(tmp_path, with_ledger):
    model, opt = mlp()
    sink = Recorder()
    run_dir = tmp_path / "run" if with_ledger else None
    with ComputeAudit(run_dir, model, opt, flush_every_steps=1, sinks=[sink]) as run:
        train(model, opt, 3, eval_after=2)
    assert isinstance(sink, Sink)
    started, *intervals, ended = sink.events
    assert started == RunStarted(name="run", run_dir=str(run_dir) if with_ledger else None, rank=0, world_size=1)
    assert intervals == expected_intervals()
    dossier = str(tmp_path / "run" / "dossier.json") if with_ledger else None
    assert ended == RunEnded(ending="finished", step=3, total_flops=3 * STEP, eval_flops=4 * PER_SAMPLE,
                             dossier=dossier)
    assert run.total_flops == 3 * STEP
    if with_ledger:                              # the same figures as the ledger's records, at the same steps
        records = [r for r in read_ledger(run_dir).records if r["kind"] == "interval"]
        assert [(r["step"], r["flops"], r["total"]) for r in records] == \
            [(i.step, i.flops, i.total_flops) for i in intervals]


def test_the_guard_stopping_a_run_and_a_crash_end_the_sinks_so(tmp_path):
    from budgets import budget_rule

    budget = budget_rule(tmp_path / "budget.yaml", "tiny-budget", 2 * STEP + STEP // 2)
    model, opt = mlp()
    stopped = Recorder()
    with pytest.raises(ComputeBudgetExceeded, match="tiny-budget"):
        with ComputeAudit(tmp_path / "stopped", model, opt, rules=[budget], on_exceed="stop", flush_every_steps=1,
                          sinks=[stopped]):
            train(model, opt, 10)
    ended = stopped.events[-1]
    assert (ended.ending, ended.step, ended.total_flops) == ("stopped", 2, 2 * STEP)
    assert ended.why.startswith("auditor: the next call would take the run to about") and "tiny-budget" in ended.why
    assert [e.step for e in stopped.events[1:-1]] == [1, 2]

    crashed = Recorder()
    with pytest.raises(RuntimeError, match="out of data"):
        with ComputeAudit(model=model, optimizer=opt, flush_every_steps=1, sinks=[crashed]):
            train(model, opt, 1)
            raise RuntimeError("out of data")
    assert crashed.events[-1] == RunEnded(ending="crashed", step=1, total_flops=STEP, why="RuntimeError: out of data")

    plain = Recorder()                             # start() and stop() without the context manager
    audit = ComputeAudit(model=model, optimizer=opt, flush_every_steps=1, sinks=[plain]).start()
    train(model, opt, 1)
    audit.stop()
    assert [type(e) for e in plain.events] == [RunStarted, Interval, RunEnded] and plain.events[-1].ending == "finished"


class Failing(Recorder):
    def interval(self, event):
        if event.step == 2:
            raise ConnectionError("tracking server gone")
        super().interval(event)


def test_attack_a_sink_that_raises_is_warned_about_once_and_dropped(tmp_path):
    """A metrics server that fails mid-run must not stop the run, the ledger or the other sinks."""
    model, opt = mlp()
    failing, other = Failing(), Recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ComputeAudit(tmp_path / "run", model, opt, flush_every_steps=1, sinks=[failing, other]) as run:
            train(model, opt, 3, eval_after=2)
    said = [str(w.message) for w in caught if "sink" in str(w.message)]
    assert said == ["auditor: the sink Failing failed in interval (ConnectionError: tracking server gone); "
                    "it gets no more events of this run"]
    assert [type(e).__name__ for e in failing.events] == ["RunStarted", "Interval"]   # nothing after the failure
    assert other.events[1:-1] == expected_intervals() and other.events[-1].ending == "finished"
    assert read_ledger(tmp_path / "run").records[-1]["total"] == run.total_flops == 3 * STEP


def test_sinks_must_be_sinks():
    with pytest.raises(TypeError, match=r"^sinks: dict is not a sink; expected an object with started, interval "
                                        r"and ended methods \(auditor\.tracking\.sinks\.Sink\)$"):
        ComputeAudit(sinks=[{}])


def test_sinks_get_the_ledgers_intervals_at_the_flush_policys_cadence(tmp_path):
    """By default a record comes every 100 steps (or 300 s) and at the end: three steps are one
    interval, at the end, with the three steps' FLOPs; the sink sees exactly the ledger's records."""
    model, opt = mlp()
    sink = Recorder()
    with ComputeAudit(tmp_path / "run", model, opt, sinks=[sink]):
        train(model, opt, 3, eval_after=2)
    intervals = sink.events[1:-1]
    assert [(i.step, i.flops, i.total_flops) for i in intervals] == [(3, 3 * STEP, 3 * STEP)]
    records = [r for r in read_ledger(tmp_path / "run").records if r["kind"] == "interval"]
    assert [(r["step"], r["flops"], r["total"]) for r in records] == [(3, 3 * STEP, 3 * STEP)]


def test_the_ledger_and_the_progress_line_are_the_audits_own_sinks(tmp_path, capsys):
    """Each ledger record is an Interval as the sinks see it (its evaluation included), and the
    progress line prints from the same events; both are made at start and gone at stop."""
    from auditor.tracking.ledger_sink import LedgerSink
    from auditor.tracking.progress import ProgressLine

    model, opt = mlp()
    sink = Recorder()
    run = ComputeAudit(tmp_path / "run", model, opt, progress_every=2, sinks=[sink]).start()
    assert [type(s) for s in run._own_sinks] == [LedgerSink, ProgressLine]
    train(model, opt, 3, eval_after=2)
    run.stop()
    assert run._sinks._required == [] and run._sinks._live == [sink]
    records = [r for r in read_ledger(tmp_path / "run").records if r["kind"] == "interval"]
    seen = sink.events[1:-1]
    assert [(r["step"], r["flops"], r.get("eval_flops", 0)) for r in records] == \
        [(i.step, i.flops, i.new_phases.get("eval", 0)) for i in seen] == \
        [(2, 2 * STEP, 0), (3, STEP, 4 * PER_SAMPLE)]       # a record at least every 2 steps (the progress line's)
    assert capsys.readouterr().err.splitlines() == [f"[auditor] step 2: {sci(2 * STEP)} FLOPs"]


def test_attack_a_ledger_that_cannot_be_written_stops_the_run(tmp_path, monkeypatch):
    """The ledger is a required sink: a record that cannot be written is the run's failure, never
    a warning the run trains past (the other sinks are optional and only warned about)."""
    from auditor.tracking.ledger_sink import LedgerSink

    def full_disk(self, event):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(LedgerSink, "interval", full_disk)
    model, opt = mlp()
    with pytest.raises(OSError, match="No space left"), \
            ComputeAudit(tmp_path / "run", model, opt, flush_every_steps=1):
        train(model, opt, 3)


def test_a_progress_line_without_a_step_cadence_still_comes_every_n_steps(tmp_path, capsys):
    """flush_every_steps=None (records at checkpoints, time, lines and the end only) with
    progress_every=2: the progress line's cadence makes the records, once every 2 steps."""
    model, opt = mlp()
    with ComputeAudit(tmp_path / "run", model, opt, flush_every_steps=None, progress_every=2):
        train(model, opt, 4)
    assert capsys.readouterr().err.splitlines() == [f"[auditor] step 2: {sci(2 * STEP)} FLOPs",
                                                    f"[auditor] step 4: {sci(4 * STEP)} FLOPs"]
    records = [r for r in read_ledger(tmp_path / "run").records if r["kind"] == "interval"]
    assert [(r["step"], r["flops"]) for r in records] == [(2, 2 * STEP), (4, 2 * STEP)]
