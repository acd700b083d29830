"""The CI gate over 100 training configs, end to end, interpreter start included.

Writes 100 configs into a temporary folder: the sample_runs/ models at varying token counts over
8 distinct (model, context length) pairs, plus a few bare-parameter configs; then times a fresh
`python -m auditor gate FOLDER --junit out.xml` process

  cold:  with an empty count cache (AUDITOR_CACHE_DIR=<an empty temp folder>): each distinct model
         and context is built on the meta device and counted once;
  warm:  the same command again on the same cache: every count comes from it.

Each figure is the median of --repeat runs (a fresh cache folder for each cold run).

    python benchmarks/gate_100.py [--repeat 3] [--keep DIR]

Target: under 30 s cold on a 2-core machine. The gate's exit code is 1 for this mix (some runs
cross the EU's 10^25 presumption); the script checks that the JUnit file has every config in it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_runs"

# (sample file, context length, how many configs): 8 distinct model/context pairs, 96 configs.
PAIRS = [
    ("gpt2-small-scratch.yaml", 256, 16),
    ("llama-3.1-8b-finetune.yaml", 8192, 16),
    ("llama-3.1-8b-finetune.yaml", 2048, 12),
    ("llama-3.1-405b.yaml", 8192, 12),
    ("mixtral-8x7b.yaml", 4096, 12),
    ("gpt3-175b.yaml", 2048, 10),
    ("t5-11b.yaml", 512, 10),
    ("deepseek-v3.yaml", 4096, 8),
]
BARE = [(405_000_000_000, None), (70_000_000_000, None), (671_000_000_000, 37_000_000_000), (7_000_000_000, None)]
SCALES = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2)   # tokens as a share of the sample's


def sample_tokens(config: dict) -> int:
    data = config["data"]
    if "tokens" in data:
        return int(float(data["tokens"]))
    return int(data["steps"]) * int(data["batch_size"]) * int(data["seq_len"])


def write_configs(folder: Path) -> int:
    n = 0
    for sample, seq_len, count in PAIRS:
        base = yaml.safe_load((SAMPLES / sample).read_text())
        model = dict(base["model"])
        if isinstance(model.get("hf_config"), str):           # a path relative to the sample: make it absolute
            model["hf_config"] = str((SAMPLES / model["hf_config"]).resolve())
        tokens = sample_tokens(base)
        for i in range(count):
            n += 1
            config = {"run": f"{Path(sample).stem}-{seq_len}-{i}", "model": model,
                      "data": {"tokens": max(seq_len, int(tokens * SCALES[i % len(SCALES)])), "seq_len": seq_len}}
            if "lineage" in base:
                config["lineage"] = base["lineage"]
            (folder / f"run-{n:03d}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for params, active in BARE:
        n += 1
        model = {"parameters": params, **({"active_parameters": active} if active else {})}
        config = {"run": f"bare-{params // 10**9}b", "model": model, "data": {"tokens": 20 * params}}
        (folder / f"run-{n:03d}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return n


def timed_gate(folder: Path, junit: Path, cache: Path) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "auditor", "gate", str(folder), "--junit", str(junit)]
    env = dict(os.environ, AUDITOR_CACHE_DIR=str(cache))
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"the gate failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, done.returncode


def check_junit(junit: Path, configs: int) -> str:
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len({c.get("classname") for c in cases}) == configs, "a config is missing from the JUnit file"
    return f"{len(cases)} test cases, {suite.get('failures')} failures, {suite.get('skipped')} skipped"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="write the configs here (kept) instead of a temp folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "configs"
        folder.mkdir(parents=True, exist_ok=True)
        configs = write_configs(folder)
        junit = Path(tmp) / "out.xml"
        cold, warm = [], []
        for r in range(args.repeat):
            cache = Path(tmp) / f"cache-{r}"           # empty: created by the gate
            seconds, code = timed_gate(folder, junit, cache)
            cold.append(seconds)
            summary = check_junit(junit, configs)
            warm.append(timed_gate(folder, junit, cache)[0])
    pairs = len({(s, n) for s, n, _ in PAIRS})
    print(f"auditor gate over {configs} configs ({pairs} model/context pairs + {len(BARE)} bare-parameter), "
          f"fresh process each, median of {args.repeat} (min-max); exit {code}; JUnit: {summary}")
    for name, xs in (("cold cache", cold), ("warm cache", warm)):
        print(f"  {name:11} {statistics.median(xs):6.2f} s  ({min(xs):.2f}-{max(xs):.2f})")


if __name__ == "__main__":
    main()
