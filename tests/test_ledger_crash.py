"""Crash test: a training process killed with SIGKILL at random moments, then resumed.

A child Python process (no torch) runs a fake training loop: step s adds 1000 + s % 7 FLOPs to
the ledger (written and fsynced every step) and every CKPT_EVERY steps writes ckpt.json
atomically, after the ledger. Each round kills it at a random moment (seeded), checks that the
crashed ledger verifies (a torn tail allowed, set aside on resume), restarts it from ckpt.json
and checks that the finished run's total is exactly an uninterrupted run's, each step counted once.
"""
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditor.record.ledger import FILENAME, read_ledger, verify_ledger

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

REPO = Path(__file__).resolve().parents[1]
STEPS, CKPT_EVERY = 150, 5
EXPECTED = sum(1000 + s % 7 for s in range(STEPS))

# The child imports the ledger's writer alone: auditor's package imports nothing heavy on the way
# (never torch), so a crash test kills a process doing what a training job's ledger does.
CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from auditor.record import ledger_writer as ledger
assert "torch" not in sys.modules
run_dir, steps, every, mode = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ckpt = os.path.join(run_dir, "ckpt.json")
start = 0
if mode == "resume":
    if os.path.exists(ckpt):
        with open(ckpt) as fh:
            start = json.load(fh)["step"]        # the user's checkpoint is the truth
    led, _ = ledger.Ledger.resume(run_dir, start, flush_every_steps=1)
else:
    led = ledger.Ledger(run_dir, flush_every_steps=1, meta={"run": "crash-test"})
for step in range(start, steps):
    time.sleep(0.002)                            # the training step
    led.append(step + 1, 1000 + step % 7)        # fsynced before any checkpoint names this step
    if (step + 1) % every == 0:
        with open(ckpt + ".tmp", "w") as fh:
            json.dump({"step": step + 1}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(ckpt + ".tmp", ckpt)
led.close(steps)
"""


def child(run_dir: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(REPO), str(run_dir), str(STEPS),
                             str(CKPT_EVERY), mode], stderr=subprocess.PIPE)


def finish(run_dir: Path, mode: str = "resume") -> None:
    proc = child(run_dir, mode)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()


def check_complete(run_dir: Path) -> None:
    res = verify_ledger(run_dir)
    assert res.ok and res.closed and not res.torn, res.summary()
    assert res.total == EXPECTED and res.step == STEPS
    steps = [r["step"] for r in read_ledger(run_dir).records if r["kind"] == "interval"]
    assert steps == list(range(1, STEPS + 1))        # every step counted once: none lost, none twice


def check_crashed(run_dir: Path) -> None:
    """The ledger a SIGKILL left is readable: it verifies (a torn tail allowed), or has no record yet."""
    path = run_dir / FILENAME
    if not path.exists():
        return
    res = verify_ledger(path)
    assert res.ok or (res.records == 0 and res.bad is None), res.summary()
    ckpt = run_dir / "ckpt.json"
    if ckpt.exists():                                # the ledger is never behind the checkpoint
        assert res.step >= json.loads(ckpt.read_text())["step"]


def tear(run_dir: Path, rng: random.Random) -> bytes | None:
    """Append part of a next record, as a write cut short by a power loss would leave it."""
    if not (run_dir / FILENAME).exists():
        return None
    st = read_ledger(run_dir)
    if not st.count or st.closed:
        return None
    nxt = dict(st.last, seq=st.last["seq"] + 1, prev=st.last["hash"], step=st.last["step"] + 1, kind="interval")
    line = json.dumps(nxt, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    torn = line[:rng.randrange(1, len(line))]
    with open(run_dir / FILENAME, "ab") as fh:
        fh.write(torn)
    return torn


def size(run_dir: Path) -> int:
    try:
        return (run_dir / FILENAME).stat().st_size
    except FileNotFoundError:
        return 0


def kill_when(proc: subprocess.Popen, run_dir: Path, target: float, rng: random.Random) -> bool:
    """SIGKILL once the ledger has grown to ``target`` bytes, a random 0-3 ms later; True if it was
    still running (a kill, not a finished run)."""
    deadline = time.monotonic() + 30
    while proc.poll() is None and size(run_dir) < target and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(rng.uniform(0, 0.003))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return proc.returncode == -signal.SIGKILL


def test_uninterrupted_run(tmp_path):
    finish(tmp_path, "fresh")
    check_complete(tmp_path)


@pytest.mark.slow
def test_sigkill_at_20_random_moments(tmp_path):
    rng = random.Random(20250801)
    finish(tmp_path / "calibrate", "fresh")
    final = size(tmp_path / "calibrate")
    killed = torn_seen = 0
    for i in range(20):
        run = tmp_path / f"run{i}"
        proc = child(run, "fresh")
        if i % 5 == 0:   # during start-up: before, while or just after the ledger is created
            time.sleep(rng.uniform(0, 0.08))
            killed += kill_when(proc, run, 0, rng)
        else:            # mid-run: at a random point of its progress
            killed += kill_when(proc, run, rng.uniform(0, 0.95) * final, rng)
        check_crashed(run)
        torn = tear(run, rng) if i % 2 else None
        if torn is not None:
            res = verify_ledger(run)
            assert res.ok and res.torn and res.torn_bytes == len(torn)
        finish(run)
        check_complete(run)
        if torn is not None:
            torn_seen += 1
            assert (run / "ledger.torn.1").read_bytes() == torn
    assert killed == 20 and torn_seen >= 5, (killed, torn_seen)


def test_repeated_kills_of_one_run(tmp_path):
    """Killed again and again, resumes included, then finished: still exactly one run's total."""
    rng = random.Random(7)
    proc, killed = child(tmp_path, "fresh"), 0
    for _ in range(8):
        killed += kill_when(proc, tmp_path, size(tmp_path) + rng.uniform(0, 3000), rng)
        check_crashed(tmp_path)
        proc = child(tmp_path, "resume")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    check_complete(tmp_path)
    kinds = [r["kind"] for r in read_ledger(tmp_path).records]
    assert killed == 8 and kinds.count("start") == 1 and kinds.count("close") == 1
    assert 1 <= kinds.count("resume") <= killed      # a kill during start-up may precede the resume record
