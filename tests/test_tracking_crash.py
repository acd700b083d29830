"""A real training process, tracked, killed with SIGKILL at 20 random moments and resumed from
its checkpoints each time, ends with exactly the total of an uninterrupted run."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from auditor.record.ledger import read_ledger, verify_ledger

STEPS, EVERY = 300, 5
CHILD = r"""
import json, os, sys, time
import torch
from auditor import ComputeAudit

run_dir, steps, every, flush = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ckpt = os.path.join(run_dir, "ckpt.json")
if os.path.exists(ckpt):
    start = json.load(open(ckpt))["step"]
elif os.path.exists(os.path.join(run_dir, "ledger.jsonl")):
    start = 0          # killed before the first checkpoint: start over, the ledger rolls back
else:
    start = None       # a fresh run
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
with ComputeAudit(run_dir, model, opt, resume_step=start, flush_every_steps=flush, flush_every_seconds=None) as run:
    for step in range(start or 0, steps):
        model(torch.randn(4 + step % 3, 16)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        time.sleep(0.04)
        if (step + 1) % every == 0:
            run.checkpoint()   # the ledger holds every step up to here before the checkpoint is saved
            with open(ckpt + ".tmp", "w") as fh:
                json.dump({"step": step + 1}, fh)
            os.replace(ckpt + ".tmp", ckpt)
print(run.total_flops)
"""


def per_step(step: int) -> int:
    batch = 4 + step % 3
    forward = 2 * 16 * 32 + 2 * 32 * 4
    return batch * (3 * forward - 2 * 16 * 32)  # the first layer's input needs no gradient


def child(run_dir, flush):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir), str(STEPS), str(EVERY), str(flush)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("flush", [1, 7])   # a record a step; records at checkpoints only (kills between them)
def test_killed_twenty_times_then_resumed_total_is_exact(tmp_path, flush):
    rng = random.Random(20261125)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    kills = 0
    while kills < 20:
        proc = child(run_dir, flush)
        time.sleep(rng.uniform(0.3, 2.6))  # during start-up (about 1.5 s), or anywhere in the loop
        if proc.poll() is not None:
            break  # finished before the kill: the run is complete
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        if (run_dir / "ledger.jsonl").exists():  # absent when killed before torch had loaded
            result = verify_ledger(run_dir)
            assert result.bad is None, result.summary()  # a torn tail may be there; nothing else
            if result.closed:
                break  # killed while exiting, after the run had closed its ledger
    proc = child(run_dir, flush)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    expected = sum(per_step(s) for s in range(STEPS))
    assert int(out.strip().splitlines()[-1]) == expected
    final = verify_ledger(run_dir)
    assert final.ok and final.closed and final.total == expected, final.summary()
    steps_recorded = [r["step"] for r in read_ledger(run_dir).records if r["kind"] == "interval"]
    assert steps_recorded[-1] == STEPS
    assert kills == 20
