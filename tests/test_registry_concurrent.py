"""Many writers at once: eight processes open a new registry together (it is migrated once) and
add runs at the same moment, some of them the same run. Every run is recorded once, no record is
lost, and each run's points are all there."""
import json
import subprocess
import sys
import time

import pytest

from helpers import invoke
from registry_runs import E, at, daily, registry_url, write_run  # noqa: F401  (a fixture)


WORKERS, OWN_RUNS = 8, 3
WORKER = """
import sys, time
from pathlib import Path
from auditor.registry.store import Registry
url, go, paths = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
while time.time() < go:                 # every process starts at the same moment
    time.sleep(0.005)
registry = Registry(url)                # the first open of a new registry: each tries to migrate it
for path in paths:
    model = "shared-model" if "shared" in path else "model-" + Path(path).parent.name
    print(registry.add(path, model=model, stage="pretraining").outcome, flush=True)
"""


@pytest.mark.slow
def test_eight_processes_adding_runs_at_once_record_each_run_once(registry_url, tmp_path):
    shared = write_run(tmp_path / "shared" / "run", at("2026-02-01"), daily(2, 7, E, "2026-02"), name="shared",
                       close=at("2026-02-09"))
    plans = []
    for w in range(WORKERS):
        own = [write_run(tmp_path / f"w{w}" / f"run{r}", at("2026-03-01", r), daily(2, 4 + r, (w + 1) * E, "2026-03"),
                         name=f"w{w}-r{r}", close=at("2026-03-20")) for r in range(OWN_RUNS)]
        plans.append([str(shared)] + [str(p) for p in own])          # everyone also adds the shared run, first
    go = time.time() + 4
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, registry_url, str(go), *paths], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for paths in plans]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [(p.returncode, err[-2000:]) for p, (_, err) in zip(procs, outputs)]
    outcomes = [line for out, _ in outputs for line in out.splitlines()]
    assert outcomes.count("added") == WORKERS * OWN_RUNS + 1                # the shared run added by exactly one
    assert outcomes.count("already recorded") == WORKERS - 1 and len(outcomes) == WORKERS * (OWN_RUNS + 1)
    runs = json.loads(invoke("registry", "runs", "--format", "json", "--registry", registry_url).stdout)["runs"]
    assert len(runs) == WORKERS * OWN_RUNS + 1 and len({r["run"] for r in runs}) == len(runs)
    expected = {"shared": 7 * E} | {f"w{w}-r{r}": (4 + r) * (w + 1) * E for w in range(WORKERS) for r in range(OWN_RUNS)}
    assert {r["name"]: r["counted_flops"] for r in runs} == expected
    models = json.loads(invoke("registry", "models", "--format", "json", "--registry", registry_url).stdout)["models"]
    assert len(models) == WORKERS + 1                                         # each model made once
    assert sum(m["cumulative_flops"] for m in models) == sum(expected.values())
    import sqlalchemy as sa

    from auditor.registry.schema import Point
    from auditor.registry.store import Registry
    with Registry(registry_url).engine.connect() as conn:     # every record of every run: start, intervals, close
        points = conn.execute(sa.select(sa.func.count()).select_from(Point)).scalar()
    assert points == (7 + 2) + sum(4 + r + 2 for _ in range(WORKERS) for r in range(OWN_RUNS))
