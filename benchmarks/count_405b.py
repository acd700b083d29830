"""Counting a Llama 3.1 405B training step at 8k context: ours vs plain FlopCounterMode.

Each side runs in its own fresh interpreter, so peak memory (ru_maxrss) is its own. Timed:
'count' is the counting alone on a model already built on the meta device; 'end to end' adds
building the model from its config. Both sides run on the same machine in one invocation.

    python benchmarks/count_405b.py [--repeat 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

LLAMA_405B = {"model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
              "num_attention_heads": 128, "num_key_value_heads": 8, "vocab_size": 128256,
              "max_position_embeddings": 131072, "rope_theta": 500000.0}
SEQ = 8192

CHILD = r"""
import json, resource, sys, time
import torch
cfg, seq, side = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
from auditor.counting.hf import build_model, example_inputs, load_config
from auditor.counting import count_step
from torch.utils.flop_counter import FlopCounterMode
t0 = time.perf_counter()
model = build_model(load_config(cfg), "meta")
inputs = example_inputs(model, 1, seq)
t1 = time.perf_counter()
if side == "ours":
    total = count_step(model, inputs).total
else:
    with FlopCounterMode(display=False) as counter:
        model(**inputs).loss.backward()
    total = counter.get_total_flops()
t2 = time.perf_counter()
print(json.dumps({"side": side, "build_s": t1 - t0, "count_s": t2 - t1, "end_to_end_s": t2 - t0,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "total": total}))
"""


def run(side: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(LLAMA_405B), str(SEQ), side],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per side, interleaved; the median is reported")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    runs = {"ours": [], "torch": []}
    for _ in range(args.repeat):
        for side in runs:
            runs[side].append(run(side))
    med = {side: {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in ("build_s", "count_s", "end_to_end_s", "peak_rss_mib")}
           for side, rs in runs.items()}
    totals = {side: rs[0]["total"] for side, rs in runs.items()}
    print(f"Llama 3.1 405B, one training step, batch 1 x {SEQ} tokens, meta device; median of {args.repeat}")
    print(f"{'':28}{'ours':>12}{'FlopCounterMode':>18}")
    rows = (("count_s", "count (s)"), ("end_to_end_s", "build + count (s)"), ("peak_rss_mib", "peak memory (MiB)"))
    for key, label in rows:
        print(f"{label:28}{med['ours'][key]:12.2f}{med['torch'][key]:18.2f}")
    print(f"{'speed-up on the count':28}{med['torch']['count_s'] / med['ours']['count_s']:12.1f}x")
    print(f"totals: ours {totals['ours']:,}  FlopCounterMode {totals['torch']:,}  "
          f"equal: {totals['ours'] == totals['torch']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"median": med, "totals": totals, "runs": runs}, fh, indent=2)


if __name__ == "__main__":
    main()
