"""Overhead of live tracking: tracked vs untracked step time, measured in one run.

Paired, interleaved blocks: each round times a block of untracked steps, a block of tracked
steps (ComputeAudit attached, its signature cache warm), another untracked block (the A/A
control: what this machine's noise alone makes of two identical blocks) and a block under
FlopCounterMode switched on for every step. Reported: the median over rounds of each ratio
to the first untracked block.

    python benchmarks/tracking_overhead.py [--width 1024 64] [--rounds 30] [--steps 20]
    python benchmarks/tracking_overhead.py --fixed-cost [--rounds 30]
    python benchmarks/tracking_overhead.py --ledger ...      # the same, each tracked block writing a ledger

``--fixed-cost``: the tracker's fixed cost a step in microseconds, on a model so small (8-8-8
MLP, one thread) that the hooks are most of the step: the least of interleaved untracked and
tracked blocks of 400 steps, which a busy machine disturbs least.

``--ledger``: each tracked block writes a ledger (a fresh RUN_DIR each, the tracker's defaults: a
record every 100 steps or 300 s, fsynced), so that the figure includes the records and their writes.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from auditor import ComputeAudit


def make(width: int, depth: int = 4):
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers)
    return model, torch.optim.SGD(model.parameters(), lr=1e-3)


def block(model, opt, x, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


_RUN_DIRS = itertools.count()
_BASE: list[tempfile.TemporaryDirectory] = []   # one folder for every block's run, removed at exit


def fresh(tracker: ComputeAudit, ledger: bool) -> ComputeAudit:
    """The tracker, about to start: with ``ledger``, pointed at a new run folder (a ledger per block)."""
    if ledger:
        if not _BASE:
            _BASE.append(tempfile.TemporaryDirectory(prefix="overhead-"))
        tracker.run_dir = Path(_BASE[0].name) / f"run{next(_RUN_DIRS)}"
    return tracker


def measure(width: int, batch: int, rounds: int, steps: int, ledger: bool = False) -> dict[str, float]:
    model, opt = make(width)
    x = torch.randn(batch, width)
    tracker = ComputeAudit()
    fresh(tracker, ledger).start()
    tracker.watch(model, opt)
    block(model, opt, x, 3)  # counts the one signature: the cache is warm from here on
    tracker.stop()
    block(model, opt, x, steps)  # warm-up
    ratios: dict[str, list[float]] = {"tracked": [], "A/A": [], "FlopCounterMode every step": []}
    for _ in range(rounds):
        base = block(model, opt, x, steps)
        fresh(tracker, ledger).start()
        tracker.watch(model, opt)
        tracked = block(model, opt, x, steps)
        tracker.stop()
        again = block(model, opt, x, steps)
        with FlopCounterMode(display=False):
            fcm = block(model, opt, x, steps)
        ratios["tracked"].append(tracked / base)
        ratios["A/A"].append(again / base)
        ratios["FlopCounterMode every step"].append(fcm / base)
    step_ms = base / steps * 1e3
    return {"step_ms": step_ms, **{k: statistics.median(v) for k, v in ratios.items()},
            "tracked_total_ok": tracker.total_flops > 0}


def fixed_cost(rounds: int, steps: int = 400, ledger: bool = False) -> tuple[float, float]:
    """(untracked, tracked) microseconds a step, each the least over ``rounds`` blocks."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(4, 8)
    tracker = ComputeAudit(model=model, optimizer=opt)
    fresh(tracker, ledger).start()
    block(model, opt, x, 20)  # the cache is warm from here on
    tracker.stop()
    block(model, opt, x, steps)
    untracked, tracked = [], []
    for _ in range(rounds):
        untracked.append(block(model, opt, x, steps) / steps * 1e6)
        fresh(tracker, ledger).start()
        tracked.append(block(model, opt, x, steps) / steps * 1e6)
        tracker.stop()
    return min(untracked), min(tracked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, nargs="+", default=[1024, 64])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fixed-cost", action="store_true", help="the tracker's fixed cost a step, in us")
    ap.add_argument("--ledger", action="store_true", help="each tracked block writes a ledger (a fresh RUN_DIR)")
    args = ap.parse_args()
    if args.fixed_cost:
        untracked, tracked = fixed_cost(args.rounds, ledger=args.ledger)
        print(f"8-8-8 MLP, batch 4, SGD, 1 thread; least of {args.rounds} blocks of 400 steps: untracked "
              f"{untracked:.1f} us/step, tracked{' with a ledger' if args.ledger else ''} {tracked:.1f} us/step: "
              f"the tracker costs {tracked - untracked:.1f} us a step")
        return
    print(f"4-layer MLP, batch {args.batch}, SGD; {torch.get_num_threads()} threads; median of {args.rounds} "
          f"rounds of {args.steps} steps; ratio to untracked step time"
          + ("; each tracked block writes a ledger" if args.ledger else ""))
    for width in args.width:
        r = measure(width, args.batch, args.rounds, args.steps, args.ledger)
        print(f"width {width:5}: untracked {r['step_ms']:.2f} ms/step | tracked {100 * (r['tracked'] - 1):+.2f} % | "
              f"A/A {100 * (r['A/A'] - 1):+.2f} % | FlopCounterMode every step "
              f"{100 * (r['FlopCounterMode every step'] - 1):+.1f} %")


if __name__ == "__main__":
    main()
