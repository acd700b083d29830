"""Small at any length: a 1,000,000-step tracked run's ledger and dossier sizes, and its HTML's load time.

    python benchmarks/million_steps.py [--steps 1000000] [--driven] [--keep DIR]

A real tracked step by default: a 4x4 linear layer, batch 1, its forward, ``.sum().backward()`` and an
SGD step, each step 64 training FLOPs (2*4*4 forward, 2*4*4 weight gradient), with the defaults of
ComputeAudit (a record every 100 steps or 300 s) and a lab budget rule (warn) that the run crosses at
its middle. ``--driven``: the tracker's step path without torch's forward and backward (the SGD step,
with no gradients, watched as the optimizer; 64 FLOPs added to the training figure the way a cached
call's are), for a machine where a million real steps take too long; the ledger and dossier are the same.

Reported: wall time a step, ledger bytes and records, dossier bytes and series points, ``auditor verify``
(exit code and seconds), the HTML report's bytes and its load in headless Chromium (Debian's, a fresh
profile, the flags tests/browser.py uses): the navigation's load event (ms after navigation start) and
the wall time of goto to load, the least and the median of ``--loads`` loads.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from auditor import ComputeAudit
from auditor.record import dossier
from auditor.record.ledger import read_ledger

FLOPS_A_STEP = 64
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def budget_rule(path: Path, threshold: int) -> str:
    path.write_text(f"id: half-way-budget\ntitle: a lab budget the run crosses half way\njurisdiction: internal\n"
                    "citation: {text: benchmark, url: 'https://example.org/budget'}\n"
                    f"threshold_flops: {threshold}\ncomparison: '>'\nbasis: training\n"
                    "status: in_force\nblocking: true\n")
    return str(path)


def run(run_dir: Path, steps: int, driven: bool) -> float:
    """Seconds a step."""
    import warnings

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rule = budget_rule(run_dir.parent / "budget.yaml", FLOPS_A_STEP * steps // 2)
    model = torch.nn.Linear(4, 4)
    x = torch.randn(1, 4)
    # SGD: an elementwise optimizer the tracker does not measure (a plain object's step() it measures each time)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the budget's crossing warning, meant
        with ComputeAudit(run_dir, model, opt, rules=[rule], on_exceed="warn") as audit:
            start = time.perf_counter()
            if driven:
                for _ in range(steps):
                    audit._add("train", FLOPS_A_STEP)  # what a cached call adds (forward + backward)
                    opt.step()
            else:
                for _ in range(steps):
                    model(x).sum().backward()
                    opt.step()
            elapsed = time.perf_counter() - start
    assert audit.total_flops == FLOPS_A_STEP * steps, audit.total_flops
    return elapsed / steps


def chromium_loads(page: Path, loads: int) -> tuple[list[float], list[float]]:
    """(load event ms after navigation start, wall ms of goto to load) for each load, a fresh profile each."""
    from playwright.sync_api import sync_playwright

    events, walls = [], []
    with sync_playwright() as p:
        for _ in range(loads):
            profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
            browser = p.chromium.launch_persistent_context(str(profile), executable_path=shutil.which("chromium"),
                                                           headless=True, args=ARGS)
            tab = browser.new_page()
            start = time.perf_counter()
            tab.goto(page.as_uri())
            tab.wait_for_load_state("load")
            walls.append((time.perf_counter() - start) * 1e3)
            events.append(tab.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
            browser.close()
            shutil.rmtree(profile, ignore_errors=True)
    return events, walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--driven", action="store_true", help="the tracker's step path without torch's forward/backward")
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="leave the run here (default: a temporary folder, removed)")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="million-"))
    base.mkdir(parents=True, exist_ok=True)
    run_dir = base / "run"
    per_step = run(run_dir, args.steps, args.driven)
    ledger, record = run_dir / "ledger.jsonl", run_dir / dossier.DOSSIER_NAME
    state = read_ledger(run_dir)
    data = dossier.load(run_dir)
    start = time.perf_counter()
    verify = subprocess.run([sys.executable, "-m", "auditor", "verify", str(run_dir)], capture_output=True, text=True)
    verify_s = time.perf_counter() - start
    html = base / "dossier.html"
    report = subprocess.run([sys.executable, "-m", "auditor", "report", str(run_dir), "--format", "html", "-o",
                             str(html)], capture_output=True, text=True)
    print(f"{args.steps:,} steps ({'driven' if args.driven else 'real'}): {per_step * 1e6:.1f} us a step tracked")
    print(f"ledger: {ledger.stat().st_size:,} bytes, {state.count:,} records")
    print(f"dossier: {record.stat().st_size:,} bytes, {len(data['tracked']['series']):,} series points")
    print(f"verify: exit {verify.returncode} in {verify_s:.2f} s: {verify.stdout.splitlines()[0][:120]}")
    print(f"report --format html: exit {report.returncode}, {html.stat().st_size:,} bytes")
    if shutil.which("chromium"):
        events, walls = chromium_loads(html, args.loads)
        print(f"Chromium, {args.loads} loads: load event {min(events):.0f} ms least, {statistics.median(events):.0f} ms "
              f"median; goto to load {min(walls):.0f} ms least, {statistics.median(walls):.0f} ms median")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
