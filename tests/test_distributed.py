"""torch.distributed: two CPU processes on gloo, set up as torchrun sets them up (env:// rendezvous).

The ranks train the same MLP on different batch sizes, so their counts differ; the audited total
after ``stop()`` must be the sum of what each rank counts on its own, on both ranks. One spawn
runs every scenario (starting processes is the slow part); each test reads its scenario's result.
"""
from __future__ import annotations

import json
import os
import traceback
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

WORLD = 2
BATCHES = {0: [4, 4, 4, 4, 3], 1: [8, 8, 8, 8, 5]}  # 5 steps, a short last batch; flushes at 2, 4 and stop
EVAL_BATCH = {0: 2, 1: 6}
FLUSH = 2
PER_SAMPLE = 3 * (2 * 32 * 64 + 2 * 64 * 10) - 2 * 32 * 64   # MLP 32-64-10 trained on data (no input grad)
GUARD_BATCH, GUARD_STEPS, GUARD_THRESHOLD = {0: 4, 1: 8}, 8, 900_000
JOIN_BATCHES = {0: [4] * 5, 1: [8] * 3}  # uneven: rank 1 runs out after 3 steps, rank 0 goes on to 5
PAIR_BATCH, PAIR_STEPS = {0: 4, 1: 6}, 4


def _mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def _train(model, opt, batches):
    g = torch.Generator().manual_seed(5)
    for b in batches:
        model(torch.randn(b, 32, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def _evaluate(model, batch):
    model.eval()
    with torch.no_grad():
        model(torch.randn(batch, 32))
    model.train()


# ---------------------------------------------------------------- scenarios (run on every rank)
def _exact(rank, tmp):
    from auditor.counting.mode import CountingMode
    from auditor.tracking import ComputeAudit

    model, opt = _mlp()
    run = ComputeAudit(None, model, opt, flush_every_steps=FLUSH).start()
    _train(model, opt, BATCHES[rank])
    _evaluate(model, EVAL_BATCH[rank])
    local = run.total_flops
    run.stop()
    # This rank's own count, every step counted at dispatch level, no audit.
    model, opt = _mlp()
    with CountingMode(model) as own_train:
        _train(model, opt, BATCHES[rank])
    with CountingMode(model) as own_eval:
        _evaluate(model, EVAL_BATCH[rank])
    return {"local": local, "total": run.total_flops, "eval": run.eval_flops, "steps": run.steps,
            "own_train": own_train.result.total, "own_eval": own_eval.result.forward}


def _ledger(rank, tmp):
    from auditor.record.ledger import read_ledger, verify_ledger
    from auditor.tracking import ComputeAudit

    model, opt = _mlp()
    run_dir = Path(tmp) / "ledger-run"
    with ComputeAudit(run_dir, model, opt, flush_every_steps=FLUSH, flush_every_seconds=None) as run:
        _train(model, opt, BATCHES[rank])
    out = {"total": run.total_flops, "ledger": (run_dir / "ledger.jsonl").exists()}
    dist.barrier()
    if rank == 0:
        state = read_ledger(run_dir)
        out["intervals"] = [[r["step"], r["flops"], r.get("ranks")] for r in state.records
                            if r["kind"] == "interval" and r["flops"]]
        verified = verify_ledger(run_dir)
        out["verified"] = [verified.ok, verified.total, verified.closed]
    return out


def _guard(rank, tmp):
    from auditor.tracking import ComputeAudit

    model, opt = _mlp()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ComputeAudit(None, model, opt, flush_every_steps=FLUSH, rules=[str(Path(tmp) / "budget.yaml")],
                          on_exceed="warn") as run:
            _train(model, opt, [GUARD_BATCH[rank]] * GUARD_STEPS)
    return {"total": run.total_flops, "warned": any("dist-budget" in str(w.message) for w in caught)}


def _overflow(rank, tmp):
    """2**62 FLOPs a rank in one step (a meta-device layer: no memory, no time): the sum is 2**63."""
    from auditor.tracking import ComputeAudit

    n = 2 ** 20
    layer = torch.nn.Linear(n, n, bias=False, device="meta")
    with ComputeAudit(None, layer, flush_every_steps=1) as run:
        layer(torch.empty(n, n, device="meta")).sum().backward()
    return {"total": run.total_flops, "steps": run.steps}


def _resume(rank, tmp):
    """A run of 4 steps writes its ledger; a restart from the checkpoint at step 2 runs 2 more."""
    from auditor.tracking import ComputeAudit

    run_dir = Path(tmp) / "resume-run"
    model, opt = _mlp()
    with ComputeAudit(run_dir, model, opt, flush_every_steps=FLUSH, flush_every_seconds=None):
        _train(model, opt, [GUARD_BATCH[rank]] * 4)
    with ComputeAudit(run_dir, model, opt, flush_every_steps=FLUSH, flush_every_seconds=None,
                      resume_step=2) as run:
        _train(model, opt, [GUARD_BATCH[rank]] * 2)
    return {"total": run.total_flops, "steps": run.steps}


def _join(rank, tmp, give_audit=True):
    """DDP with uneven inputs under Join: the audit (given to Join, or watching the DDP model that
    is) runs no collective while a rank may have joined; its counts are summed when all have."""
    from torch.distributed.algorithms.join import Join
    from torch.nn.parallel import DistributedDataParallel

    from auditor.record.ledger import read_ledger, verify_ledger
    from auditor.tracking import ComputeAudit

    model, opt = _mlp()
    ddp = DistributedDataParallel(model)
    run_dir = Path(tmp) / f"join-run-{give_audit}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ComputeAudit(run_dir, ddp, opt, flush_every_steps=FLUSH, flush_every_seconds=None) as run:
            with Join([ddp, run] if give_audit else [ddp]):
                _train(ddp, opt, JOIN_BATCHES[rank])
            after_join = run.all_ranks_flops
    out = {"total": run.total_flops, "steps": run.steps, "after_join": after_join}
    dist.barrier()
    if rank == 0:
        out["intervals"] = [[r["step"], r["flops"], r.get("ranks")] for r in read_ledger(run_dir).records
                            if r["kind"] == "interval"]
        verified = verify_ledger(run_dir)
        out["verified"] = [verified.ok, verified.total, verified.closed, verified.step]
    return out


def _pairs(rank, tmp):
    """Two calls a step on each rank; sync() halfway makes the ledger's figure every rank's."""
    from auditor.record.ledger import read_ledger
    from auditor.tracking import ComputeAudit

    model, opt = _mlp()
    run_dir = Path(tmp) / "pairs-run"
    g = torch.Generator().manual_seed(rank)
    # No all-reduce on the step cadence (100); every ledger record written as it is appended (1e-9 s).
    with ComputeAudit(run_dir, model, opt, flush_every_steps=100, flush_every_seconds=1e-9) as run:
        for step in range(PAIR_STEPS):
            a, b = (model(torch.randn(PAIR_BATCH[rank], 32, generator=g)) for _ in range(2))
            (a * b).sum().backward()
            opt.step()
            opt.zero_grad()
            if step == 1:
                run.sync()
                halfway = run.all_ranks_flops
                dist.barrier()
                ledger_halfway = read_ledger(run_dir).total if rank == 0 else None
    return {"total": run.total_flops, "halfway": halfway, "ledger_halfway": ledger_halfway}


def _phases(rank, tmp):
    """Tagged phases on each rank, different names on each: the ledger sums them by name, and every
    rank holds the run's figures by phase after stop()."""
    from auditor.record.ledger import read_ledger
    from auditor.record.verify import verify_target

    model, opt = _mlp()
    run_dir = Path(tmp) / "phases-run"
    with ComputeAudit_(run_dir, model, opt) as run:
        for _ in range(3):
            with run.phase("rollout" if rank == 0 else "teacher"), torch.no_grad():
                model(torch.randn(2 + rank, 32))
            with run.phase("rollout"), torch.no_grad():
                model(torch.randn(1, 32))
            _train(model, opt, [BATCHES[rank][0]])
    out = {"phases": run.flops_by_phase}
    dist.barrier()
    if rank == 0:
        out["ledger"] = [r.get("phases") for r in read_ledger(run_dir).records if r["kind"] == "interval"]
        out["verify"] = verify_target(run_dir)[0]
    return out


def ComputeAudit_(*args, **kwargs):
    from auditor.tracking import ComputeAudit

    return ComputeAudit(*args, flush_every_steps=FLUSH, flush_every_seconds=None, **kwargs)


SCENARIOS = {"exact": _exact, "ledger": _ledger, "guard": _guard, "overflow": _overflow, "resume": _resume,
             "join": _join, "join-ddp-only": lambda rank, tmp: _join(rank, tmp, give_audit=False), "pairs": _pairs,
             "phases": _phases}


def _worker(rank, port, tmp, backend):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    results = {}
    dist.init_process_group(backend, timeout=timedelta(seconds=30))
    try:
        for name, fn in SCENARIOS.items():
            try:
                results[name] = fn(rank, tmp)
            except Exception:  # recorded: the test of this scenario fails with it, the others go on
                results[name] = {"error": traceback.format_exc()}
            dist.barrier()
    finally:
        dist.destroy_process_group()
        Path(tmp, f"rank{rank}.json").write_text(json.dumps(results))


def _spawn(tmp: Path, backend: str, timeout: float = 120.0) -> list[dict]:
    from torchrun import free_port, spawn_ranks

    return spawn_ranks(_worker, WORLD, (free_port(), str(tmp), backend), tmp, timeout)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    tmp = tmp_path_factory.mktemp("distributed")
    from budgets import budget_rule

    budget_rule(tmp / "budget.yaml", "dist-budget", GUARD_THRESHOLD)
    return _spawn(tmp, "gloo")


def _scenario(ranks, name):
    out = [r[name] for r in ranks]
    for rank, r in enumerate(out):
        assert "error" not in r, f"rank {rank}:\n{r['error']}"
    return out


@pytest.mark.slow
def test_two_ranks_total_is_the_sum_of_each_ranks_own_count(ranks):
    r0, r1 = _scenario(ranks, "exact")
    assert r0["own_train"] != r1["own_train"]            # the ranks did different work
    assert r0["local"] == r0["own_train"] and r1["local"] == r1["own_train"]  # before stop: this rank's
    for r in (r0, r1):                                     # after stop: the run's, on every rank
        assert r["total"] == r0["own_train"] + r1["own_train"]
        assert r["eval"] == r0["own_eval"] + r1["own_eval"]
        assert r["steps"] == 5
    assert r0["total"] == (sum(BATCHES[0]) + sum(BATCHES[1])) * PER_SAMPLE


def test_rank_zero_writes_the_summed_intervals(ranks):
    r0, r1 = _scenario(ranks, "ledger")
    per_step = [(a + b) * PER_SAMPLE for a, b in zip(BATCHES[0], BATCHES[1])]
    assert r0["intervals"] == [[2, sum(per_step[:2]), 2], [4, sum(per_step[2:4]), 2], [5, per_step[4], 2]]
    assert r0["verified"] == [True, sum(per_step), True]
    assert r0["total"] == r1["total"] == sum(per_step)


def test_guard_sees_the_runs_total_not_one_ranks(ranks):
    r0, r1 = _scenario(ranks, "guard")
    run_total = GUARD_STEPS * (GUARD_BATCH[0] + GUARD_BATCH[1]) * PER_SAMPLE
    assert r0["total"] == r1["total"] == run_total > GUARD_THRESHOLD
    assert GUARD_STEPS * GUARD_BATCH[1] * PER_SAMPLE < GUARD_THRESHOLD  # no single rank crosses it
    assert r0["warned"] and r1["warned"]


def test_cross_rank_sum_past_int64_is_exact(ranks):
    r0, r1 = _scenario(ranks, "overflow")
    assert r0["steps"] == r1["steps"] == 1
    assert r0["total"] == r1["total"] == 2 ** 63  # today: -2**63


def test_resumed_run_total_is_the_same_on_every_rank(ranks):
    r0, r1 = _scenario(ranks, "resume")
    per_step = (GUARD_BATCH[0] + GUARD_BATCH[1]) * PER_SAMPLE
    assert r0["steps"] == r1["steps"] == 4
    assert r0["total"] == 4 * per_step     # 2 steps from the ledger, 2 run again after the restart
    assert r1["total"] == 4 * per_step     # today: 2 * per_step


@pytest.mark.parametrize("scenario", ["join", "join-ddp-only"])
def test_uneven_steps_under_join_sum_every_ranks_own_count(ranks, scenario):
    r0, r1 = _scenario(ranks, scenario)
    rows = {r: sum(JOIN_BATCHES[r]) for r in (0, 1)}
    total = (rows[0] + rows[1]) * PER_SAMPLE  # each rank's own rows, summed
    assert r0["total"] == r1["total"] == total
    assert r0["steps"] == r1["steps"] == 5  # the run's: the longest rank's
    if scenario == "join":  # summed at the end of Join, before the audit stops
        assert r0["after_join"] == r1["after_join"] == total
    # Intervals of 2 steps: steps 1-2 of both ranks, 3-4 of rank 0 and 3 of rank 1, 5 of rank 0.
    four, eight = 4 * PER_SAMPLE, 8 * PER_SAMPLE
    assert r0["intervals"] == [[2, 2 * four + 2 * eight, 2], [4, 2 * four + eight, 2], [5, four, 2]]
    assert r0["verified"] == [True, total, True, 5]


def test_two_calls_a_step_on_each_rank_and_sync_gives_the_ledgers_figure(ranks):
    r0, r1 = _scenario(ranks, "pairs")
    per_step = 2 * (PAIR_BATCH[0] + PAIR_BATCH[1]) * PER_SAMPLE  # both ranks, two calls each
    assert r0["total"] == r1["total"] == PAIR_STEPS * per_step
    assert r0["halfway"] == r1["halfway"] == r0["ledger_halfway"] == 2 * per_step


def test_phases_are_summed_over_ranks_by_name(ranks):
    r0, r1 = _scenario(ranks, "phases")
    forward = 2 * 32 * 64 + 2 * 64 * 10                      # a row forward, no grad
    expected = {"train": 3 * (BATCHES[0][0] + BATCHES[1][0]) * PER_SAMPLE, "eval": 0,
                "rollout": 3 * (2 + 1 + 1) * forward, "teacher": 3 * 3 * forward}
    assert r0["phases"] == r1["phases"] == expected
    # Flushes at steps 2 and 3 (stop): each interval's phases, both ranks' summed.
    assert r0["ledger"] == [{"rollout": 2 * 4 * forward, "teacher": 2 * 3 * forward},
                            {"rollout": 4 * forward, "teacher": 3 * forward}]
    assert r0["verify"] == 0


def _nccl_worker(rank, port, tmp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", timeout=timedelta(seconds=30))
    from auditor.tracking import ComputeAudit

    out = {}
    try:
        layer = torch.nn.Linear(8, 8, device="cuda")
        with ComputeAudit(None, layer, flush_every_steps=1) as run:
            layer(torch.randn(4, 8, device="cuda")).sum().backward()
        out["total"] = run.total_flops
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        dist.destroy_process_group()
        Path(tmp, f"rank{rank}.json").write_text(json.dumps({"nccl": out}))


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.device_count() >= 2 and dist.is_available()
                         and dist.is_nccl_available()), reason="needs two CUDA devices and NCCL")
def test_nccl_process_group(tmp_path):
    import torch.multiprocessing as mp

    from torchrun import free_port

    mp.start_processes(_nccl_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text())["nccl"] for r in range(WORLD)]
    assert all("error" not in r for r in results), results
    assert results[0]["total"] == results[1]["total"] == 2 * 2 * (4 * 8 * 8) * 2


def test_sums_travel_on_the_device_the_backend_serves(monkeypatch):
    """NCCL takes CUDA tensors only: the all-reduces go on the current CUDA device (checked here
    without one, by patching; test_nccl_process_group runs them where two GPUs are present)."""
    from auditor import ranks

    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    assert ranks.collective_device() == "cpu"
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert ranks.collective_device() == torch.device("cuda", 3)
