"""A torch.compile'd model's step time with and without the audit, and its compiled graph's calls.

The audit must never stop compiled code from running: a dispatch mode over a compiled frame
makes Dynamo skip it for the rest of the process, and the run trains eagerly. Here the compiled
forward graph's calls are counted by a backend that wraps the real one (inductor, or aot_eager
where no C++ compiler is found), in paired, interleaved blocks of steps: untracked, tracked
(ComputeAudit watching the compiled module, its call cache warm), untracked again (the A/A
control). Reported: the median over rounds of each block's time to the first untracked block's,
and the graph calls in each kind of block (equal: every step ran the compiled graph).

    python benchmarks/compiled_tracking.py [--backend inductor|aot_eager] [--width 512] [--rounds 15] [--steps 20]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import time
import warnings

import torch

from auditor import ComputeAudit
from tracking_overhead import block, make  # the same MLP and step as the eager benchmark (benchmarks/)


class Counted:
    """A torch.compile backend counting the calls of the forward graphs it compiles."""

    def __init__(self, name: str):
        self.name, self.calls = name, 0

    def __call__(self, gm, example_inputs):
        if self.name == "inductor":
            from torch._inductor.compile_fx import compile_fx

            compiled = compile_fx(gm, example_inputs)
        else:
            from torch._dynamo.backends.debugging import aot_eager

            compiled = aot_eager(gm, example_inputs)

        def run(*args):
            self.calls += 1
            return compiled(*args)
        return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["inductor", "aot_eager"],
                        default="inductor" if shutil.which("g++") or shutil.which("cc") else "aot_eager")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    backend = Counted(args.backend)
    model, opt = make(args.width)
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(args.batch, args.width)
    began = time.perf_counter()
    block(compiled, opt, x, 3)                       # compiles the graphs
    compile_s = time.perf_counter() - began
    audit = ComputeAudit(model=compiled, optimizer=opt).start()
    block(compiled, opt, x, 3)                       # the audit's one call key, counted on meta
    audit.stop()
    flops_per_step = audit.total_flops // 3
    block(compiled, opt, x, args.steps)              # warm-up
    ratios: dict[str, list[float]] = {"tracked": [], "A/A": []}
    calls = {"untracked": [], "tracked": []}
    for _ in range(args.rounds):
        before = backend.calls
        base = block(compiled, opt, x, args.steps)
        calls["untracked"].append(backend.calls - before)
        audit.start()
        audit.watch(compiled, opt)
        before = backend.calls
        tracked = block(compiled, opt, x, args.steps)
        calls["tracked"].append(backend.calls - before)
        audit.stop()
        again = block(compiled, opt, x, args.steps)
        ratios["tracked"].append(tracked / base)
        ratios["A/A"].append(again / base)
    eager, eager_opt = make(args.width)
    block(eager, eager_opt, x, 3)
    eager_ms = statistics.median(block(eager, eager_opt, x, args.steps) / args.steps * 1e3 for _ in range(5))
    print(f"{args.backend}, {args.width}-wide 4-layer MLP, batch {args.batch}, {torch.get_num_threads()} threads; "
          f"compiled in {compile_s:.1f} s; {args.rounds} rounds of {args.steps} steps")
    print(f"untracked compiled step {base / args.steps * 1e3:.2f} ms (eager {eager_ms:.2f} ms); "
          f"tracked {100 * (statistics.median(ratios['tracked']) - 1):+.2f} %, "
          f"A/A {100 * (statistics.median(ratios['A/A']) - 1):+.2f} % (medians of the ratios)")
    print(f"compiled forward graph calls a block: untracked {sorted(set(calls['untracked']))}, "
          f"tracked {sorted(set(calls['tracked']))} (of {args.steps} steps)")
    closed = 3 * 4 * 2 * args.batch * args.width ** 2 - 2 * args.batch * args.width ** 2
    print(f"audited FLOPs a step {flops_per_step:,} (closed form {closed:,}); "
          f"total counted {audit.total_flops:,} over {audit.steps} steps")


if __name__ == "__main__":
    main()
