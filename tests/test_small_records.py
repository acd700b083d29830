"""Small at any length: ledger records per interval (and at every checkpoint, stop, crossing and the
end), the dossier's series downsampled to a bound, exact at its ends, crossings and resume cuts."""
import json
import os
import subprocess
import sys

import pytest
import torch
from budgets import budget_rule
from helpers import invoke

from auditor import ComputeAudit
from auditor.record import dossier
from auditor.record.flush_policy import FlushPolicy
from auditor.record.ledger import read_ledger
from auditor.record.ledger_writer import Ledger
from auditor.record.series import LIMIT, downsample, lines_of, mismatch
from auditor.tracking import ComputeBudgetExceeded

PER_SAMPLE = 2 * 32 * 64 + 2 * 64 * 10
PER_STEP = 8 * (3 * PER_SAMPLE - 2 * 32 * 64)  # batch 8; the first layer's input needs no gradient: 96,256


def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def steps(model, opt, n, batch=8):
    for _ in range(n):
        model(torch.randn(batch, 32)).sum().backward()
        opt.step()
        opt.zero_grad()


def kinds_steps_flops(run_dir):
    return [(r["kind"], r["step"], r["flops"]) for r in read_ledger(run_dir).records]


# ---------------------------------------------------------------- the series


def ledger_points(n, per=10):
    """n records, the i-th at step 100 i with total per * i (a start record at 0, 0)."""
    return [(100 * i, per * i) for i in range(n)]


def test_a_short_series_is_every_record():
    points = ledger_points(LIMIT)
    assert downsample(points, lines=[(55, ">")], cuts=[3]) == [list(p) for p in points]


def test_a_long_series_is_bounded_and_exact_at_its_ends_crossings_and_cuts():
    points = ledger_points(100_000)                  # totals 0, 10, 20, ...
    lines = [(12_345, ">"), (500_000, ">="), (10**30, ">")]   # crossed at index 1,235 and 50,000; never
    series = downsample(points, lines=lines, cuts=[77_777])
    assert len(series) <= LIMIT
    assert series[0] == [0, 0] and series[-1] == [9_999_900, 999_990]
    for exact in ([123_400, 12_340], [123_500, 12_350],          # the last before 12,345 and the first past it
                  [4_999_900, 499_990], [5_000_000, 500_000],    # '>=': 500,000 itself is past the line
                  [7_777_600, 777_760], [7_777_700, 777_770]):   # the record before a resume, and the resume
        assert exact in series
    assert all(tuple(p) in set(points) for p in series)           # real records only, never interpolated
    assert series == sorted(series)
    # the rest evenly spaced: no gap between kept records is more than twice the even spacing
    gaps = [b[0] - a[0] for a, b in zip(series, series[1:])]
    assert max(gaps) <= 2 * 100 * 100_000 // (LIMIT - 8)


def test_a_strict_line_met_exactly_is_crossed_by_the_next_record():
    points = ledger_points(5000)
    series = downsample(points, lines=[(20_000, ">")], limit=10)
    # 20,000 itself is not past '> 20,000': the record holding it is the last before, the next the first past
    assert [200_000, 20_000] in series and [200_100, 20_010] in series and len(series) <= 10


def test_lines_come_from_well_formed_verdicts_only():
    verdicts = [{"threshold_flops": 10**25, "comparison": ">"}, {"threshold_flops": 10**26, "comparison": ">="},
                {"threshold_flops": 10**25, "comparison": ">"}, {"threshold_flops": True, "comparison": ">"},
                {"threshold_flops": 1.5e25, "comparison": ">"}, {"threshold_flops": 7, "comparison": "<"},
                "not a verdict", {"threshold_flops": 0, "comparison": ">"}]
    assert lines_of(verdicts) == [(10**25, ">"), (10**26, ">=")]
    assert lines_of("tampered") == []


def test_mismatch_accepts_the_downsampled_or_the_full_series_and_names_a_changed_point():
    points = ledger_points(3000)
    verdicts = [{"threshold_flops": 4321, "comparison": ">"}]
    short = downsample(points, lines=lines_of(verdicts))
    assert mismatch(short, points, [], verdicts) is None
    assert mismatch([list(p) for p in points], points, [], verdicts) is None      # an older dossier's
    changed = [list(p) for p in short]
    changed[5][1] += 1
    assert mismatch(changed, points, [], verdicts) == "at point 5"
    assert mismatch(short[:-1], points, [], verdicts) == f"at point {len(short) - 1}"
    assert mismatch("no", points, [], verdicts) == "(not a list of points)"
    assert mismatch(None, points, [], verdicts) is None


# ---------------------------------------------------------------- the flush policy


def test_policy_due_by_steps_lines_and_seconds(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("auditor.record.flush_policy.time.monotonic", lambda: clock[0])
    policy = FlushPolicy(10, 60.0, [(500, ">"), (800, ">=")])
    assert not policy.due(9, 500)                 # 9 steps, 500 is not past '> 500', 0 s
    assert policy.due(10, 0) and policy.due(9, 501)
    clock[0] += 60.0
    assert policy.due(1, 0)
    policy.written(4, 600)                        # past the first line: the next is 800
    assert not policy.due(13, 799) and policy.due(13, 800) and policy.due(14, 0)
    policy.written(20, 900)                       # past both lines: only steps and seconds are left
    assert not policy.due(29, 10**40) and policy.due(30, 0)
    assert not FlushPolicy(None, None).due(10**9, 10**30)


@pytest.mark.parametrize("steps_, seconds, expected", [
    (0, None, "flush_every_steps must be an int >= 1 or None, not 0"),
    (1.5, None, "flush_every_steps must be an int >= 1 or None, not 1.5"),
    (True, None, "flush_every_steps must be an int >= 1 or None, not True"),
    (None, -1, "flush_every_seconds must be a positive number or None, not -1"),
    (None, "30", "flush_every_seconds must be a positive number or None, not '30'"),
])
def test_a_bad_cadence_is_refused_when_the_audit_is_made(steps_, seconds, expected):
    with pytest.raises(ValueError) as err:
        ComputeAudit(flush_every_steps=steps_, flush_every_seconds=seconds)
    assert str(err.value) == expected


def test_records_per_interval_at_checkpoint_and_at_the_end(tmp_path):
    model, opt = mlp()
    with ComputeAudit(tmp_path / "r", model, opt, flush_every_steps=4, flush_every_seconds=None) as run:
        steps(model, opt, 6)
        run.checkpoint()                     # step 6: a record, though the policy would wait for 8
        steps(model, opt, 5)                 # due at 10 (4 after the checkpoint's record); then 11 at the end
    assert kinds_steps_flops(tmp_path / "r") == [
        ("start", 0, 0), ("interval", 4, 4 * PER_STEP), ("interval", 6, 2 * PER_STEP),
        ("interval", 10, 4 * PER_STEP), ("interval", 11, PER_STEP), ("close", 11, 0)]
    assert run.total_flops == 11 * PER_STEP == read_ledger(tmp_path / "r").total
    assert invoke("verify", tmp_path / "r").exit_code == 0


def test_between_records_a_step_touches_no_ledger(tmp_path, monkeypatch):
    """No JSON, hash or write between flushes: the ledger is not called at all."""
    calls = []
    original = Ledger.append
    monkeypatch.setattr(Ledger, "append", lambda self, *a, **k: (calls.append(a[0]), original(self, *a, **k))[1])
    model, opt = mlp()
    with ComputeAudit(tmp_path / "r", model, opt) as run:   # the defaults: 100 steps, 300 s
        steps(model, opt, 99)
        assert calls == [] and run._interval_flops == 99 * PER_STEP
        steps(model, opt, 1)
        assert calls == [100]
        steps(model, opt, 30)
    assert calls == [100, 130]


def test_a_checkpoint_after_steps_that_counted_nothing_still_leaves_a_record(tmp_path):
    model, opt = mlp()
    with ComputeAudit(tmp_path / "r", model, opt, flush_every_steps=50) as run:
        steps(model, opt, 2)
        for _ in range(3):
            opt.step()                       # steps without a call of the model: no FLOPs
        run.checkpoint()
    assert kinds_steps_flops(tmp_path / "r") == [
        ("start", 0, 0), ("interval", 5, 2 * PER_STEP), ("close", 5, 0)]
    model, opt = mlp()
    with ComputeAudit(tmp_path / "z", model, opt, flush_every_steps=50) as run:
        steps(model, opt, 2)
        run.checkpoint()
        opt.step()
        opt.step()
        run.checkpoint()                     # 2 steps of nothing: a zero interval at step 4
    assert kinds_steps_flops(tmp_path / "z") == [
        ("start", 0, 0), ("interval", 2, 2 * PER_STEP), ("interval", 4, 0), ("close", 4, 0)]
    assert invoke("verify", tmp_path / "z").exit_code == 0


def test_a_stop_by_the_guard_records_the_steps_before_it(tmp_path):
    rule = budget_rule(tmp_path / "b.yaml", "tiny-budget", 10 * PER_STEP)
    model, opt = mlp()
    with pytest.raises(ComputeBudgetExceeded), \
            ComputeAudit(tmp_path / "r", model, opt, rules=[rule], on_exceed="stop", flush_every_steps=100) as run:
        steps(model, opt, 20)
    # the 11th step's forward would pass 10 steps' worth: stopped before it, the 10 steps recorded
    assert run.total_flops == 10 * PER_STEP
    assert kinds_steps_flops(tmp_path / "r")[:2] == [("start", 0, 0), ("interval", 10, 10 * PER_STEP)]


def test_a_stop_by_the_guard_is_durable_before_the_exception_is_seen(tmp_path):
    rule = budget_rule(tmp_path / "b.yaml", "tiny-budget", 3 * PER_STEP)
    model, opt = mlp()
    run = ComputeAudit(tmp_path / "r", model, opt, rules=[rule], on_exceed="stop").start()
    with pytest.raises(ComputeBudgetExceeded):
        steps(model, opt, 5)
    # read as the exception is seen: the steps since the last record, then the close (a stopped run
    # in one process is ended by the guard itself, its dossier written: a framework may never call stop())
    assert kinds_steps_flops(tmp_path / "r") == [("start", 0, 0), ("interval", 3, 3 * PER_STEP), ("close", 3, 0)]
    assert not run.running and (tmp_path / "r" / "dossier.json").is_file()


def test_a_record_at_each_line_crossed(tmp_path):
    rule = budget_rule(tmp_path / "b.yaml", "soft-line", 5 * PER_STEP + 1)   # passed by the 6th step
    model, opt = mlp()
    with pytest.warns(UserWarning, match="soft-line"), \
            ComputeAudit(tmp_path / "r", model, opt, rules=[rule], on_exceed="warn", flush_every_steps=100):
        steps(model, opt, 9)
    assert kinds_steps_flops(tmp_path / "r") == [
        ("start", 0, 0), ("interval", 6, 6 * PER_STEP), ("interval", 9, 3 * PER_STEP), ("close", 9, 0)]


# ---------------------------------------------------------------- the dossier and verify


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """1,500 records (a record a step): more than LIMIT, so the dossier's series is downsampled."""
    run_dir = tmp_path_factory.mktemp("long") / "run"
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    rule = budget_rule(run_dir.parent / "line.yaml", "a-line", 64 * 350)   # 64 FLOPs a step (batch 1)
    with pytest.warns(UserWarning), ComputeAudit(run_dir, model, opt, rules=[rule], flush_every_steps=1,
                                                 flush_every_seconds=None) as run:
        for _ in range(1500):
            model(torch.randn(1, 4)).sum().backward()
            opt.step()
    assert run.total_flops == 1500 * 64                 # 2*4*4 forward, 2*4*4 weight gradient (no input grad)
    return run_dir


def test_the_dossier_series_is_downsampled_exactly(long_run):
    data = dossier.load(long_run)
    records = read_ledger(long_run).records
    series = data["tracked"]["series"]
    assert len(records) == 1502 and len(series) <= LIMIT
    assert series[0] == [0, 0] and series[-1] == [1500, 1500 * 64]
    # '> 22,400' with 64 a step: step 350 is at 22,400 (not past), step 351 the first past it
    assert [350, 22_400] in series and [351, 22_464] in series
    assert invoke("verify", long_run).exit_code == 0


def copy_of(run_dir, tmp_path):
    import shutil
    return shutil.copytree(run_dir, tmp_path / "copy")


def reseal(run_dir, edit):
    data = json.loads((run_dir / dossier.DOSSIER_NAME).read_bytes())
    edit(data)
    dossier.write(dossier.seal(data), run_dir / dossier.DOSSIER_NAME)


@pytest.mark.parametrize("edit, at", [
    (lambda s: s[300].__setitem__(1, s[300][1] + 64), 300),   # a point's total
    (lambda s: s[300].__setitem__(0, s[300][0] + 1), 300),    # a point's step
    (lambda s: s.pop(300), 300),                              # a point dropped
    (lambda s: s.insert(300, list(s[300])), 301),             # a point doubled: the next one is out of place
])
def test_attack_a_changed_point_of_a_downsampled_series(long_run, tmp_path, edit, at):
    run_dir = copy_of(long_run, tmp_path)
    reseal(run_dir, lambda d: edit(d["tracked"]["series"]))
    result = invoke("verify", run_dir)
    assert result.exit_code == 1 and f"tracked.series differs from the ledger's records at point {at}" in result.output


def test_attack_verdicts_edited_to_move_the_exact_points(long_run, tmp_path):
    """A line moved in the verdicts picks other records: the series no longer matches the verdicts it claims."""
    run_dir = copy_of(long_run, tmp_path)
    reseal(run_dir, lambda d: [v.update(threshold_flops=64 * 1000) for v in d["verdicts"] if v["rule"] == "a-line"])
    result = invoke("verify", run_dir)
    assert result.exit_code == 1 and "tracked.series differs" in result.output


def test_a_dossier_with_every_record_in_its_series_still_verifies(long_run, tmp_path):
    """Dossiers written before the series was downsampled carry a point per record."""
    run_dir = copy_of(long_run, tmp_path)
    reseal(run_dir, lambda d: d["tracked"].update(series=[[r["step"], r["total"]] for r in
                                                          read_ledger(run_dir).records]))
    assert invoke("verify", run_dir).exit_code == 0


def test_a_downsampled_dossier_whose_records_a_resume_rolled_back_is_stale_not_tampered(long_run, tmp_path):
    """Verify rebuilds the series from the rolled-back part (and the cuts in it) to check an older dossier."""
    run_dir = copy_of(long_run, tmp_path)
    led, total = Ledger.resume(run_dir, 1200)
    assert total == 1200 * 64
    led.append(1210, 640, ranks=1)
    led.close()
    result = invoke("verify", run_dir)
    assert result.exit_code == 0, result.output
    assert "stale: the run was resumed from an earlier checkpoint after this dossier" in result.output
    reseal(run_dir, lambda d: d["tracked"]["series"][-2].__setitem__(1, 0))     # and a point changed in it
    result = invoke("verify", run_dir)
    assert result.exit_code == 1 and "tracked.series differs from the rolled-back records in ledger.rolledback.1" \
        in result.output


def test_the_html_draws_the_downsampled_series(long_run, tmp_path):
    result = invoke("report", long_run, "--format", "html", "-o", tmp_path / "d.html")
    assert result.exit_code == 1, result.output      # 1: the run crossed its (blocking) line, as it meant to
    html = (tmp_path / "d.html").read_text()
    polyline = html.split('aria-label="Cumulative training compute over the run"')[1].split('points="')[1]
    drawn = polyline.split('"')[0].split()
    assert len(drawn) == len(dossier.load(long_run)["tracked"]["series"])


def test_an_old_per_step_ledger_resumes_and_verifies(tmp_path):
    """A ledger written a record a step (before the flush policy) resumes at any step and verifies."""
    led = Ledger(tmp_path / "r")
    for step in range(1, 11):
        led.append(step, PER_STEP, ranks=1)
    led.flush()
    del led
    model, opt = mlp()
    with ComputeAudit(tmp_path / "r", model, opt, resume_step=7) as run:
        steps(model, opt, 3)
    assert run.total_flops == 10 * PER_STEP
    kinds = kinds_steps_flops(tmp_path / "r")
    assert kinds[7:] == [("interval", 7, PER_STEP), ("resume", 7, 0), ("interval", 10, 3 * PER_STEP),
                         ("close", 10, 0)]
    assert invoke("verify", tmp_path / "r").exit_code == 0


# ---------------------------------------------------------------- a crash between records

CHILD = r"""
import os, signal, sys
import torch
from auditor import ComputeAudit

run_dir, resume, stop_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
with ComputeAudit(run_dir, model, opt, resume_step=resume if resume >= 0 else None) as run:
    for step in range(max(resume, 0), 40):
        model(torch.randn(8, 32)).sum().backward()
        opt.step()
        opt.zero_grad()
        if step + 1 == 25:
            run.checkpoint()
        if step + 1 == stop_at:
            os.kill(os.getpid(), signal.SIGKILL)   # between records: the default policy waits for step 100
print(run.total_flops)
"""


def test_resume_exact_after_a_sigkill_between_records(tmp_path):
    run_dir = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), "-1", "33"], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    # the checkpoint's record is there; steps 26-33 were trained and never recorded (the run redoes them)
    assert kinds_steps_flops(run_dir) == [("start", 0, 0), ("interval", 25, 25 * PER_STEP)]
    done = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), "25", "0"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == 40 * PER_STEP
    assert kinds_steps_flops(run_dir)[2:] == [("resume", 25, 0), ("interval", 40, 15 * PER_STEP), ("close", 40, 0)]
    assert invoke("verify", run_dir).exit_code == 0
