"""End-to-end preflight of the Llama 3.1 405B sample, interpreter start included.

Three figures, each the median of --repeat runs of a fresh `python -m auditor preflight ...
--format json` process:
  cold:  an empty count cache: the model is built on meta and counted;
  warm:  the count comes from the cache (same config, context and versions);
  floor: `python -c "import torch, transformers' Llama modules"`, what any cold run must pay,
         with the command line's gc settings (auditor/startup.py) and with CPython's defaults.

    python benchmarks/preflight_405b.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_runs" / "llama-3.1-405b.yaml"
PREFLIGHT = [sys.executable, "-m", "auditor", "preflight", str(SAMPLE), "--format", "json"]
IMPORTS = "import torch, transformers.models.llama.modeling_llama"
FLOOR = [sys.executable, "-c", f"from auditor.cli.startup import tune_for_command_line as t; t(); {IMPORTS}"]
FLOOR_DEFAULT_GC = [sys.executable, "-c", IMPORTS]


def timed(cmd: list[str], cache: str) -> float:
    env = dict(os.environ, AUDITOR_CACHE_DIR=cache)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if done.returncode not in (0, 1):  # 1: the 405B run crosses the EU's blocking 1e25, as it should
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {done.returncode}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cold, warm, floor, floor_default = [], [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(timed(PREFLIGHT, cache))
            warm.append(timed(PREFLIGHT, cache))
        floor.append(timed(FLOOR, "off"))
        floor_default.append(timed(FLOOR_DEFAULT_GC, "off"))
    print(f"preflight of {SAMPLE.name}, end to end, median of {args.repeat} (min-max)")
    for name, xs in (("cold cache", cold), ("warm cache", warm), ("import floor", floor),
                     ("  default gc", floor_default)):
        print(f"  {name:13} {statistics.median(xs):5.2f} s  ({min(xs):.2f}-{max(xs):.2f})")


if __name__ == "__main__":
    main()
