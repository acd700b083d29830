"""What counting an encoder-decoder's decoder alone used to miss: the whole model against its causal LM.

Before count_hf chose the model class by the config, twelve encoder-decoder types (bart, marian,
whisper, ...) were built with AutoModelForCausalLM, which is their decoder alone. This prints,
for transformers' default config of each type (bart: BART-large's shape, marian: opus-mt's,
whisper: Whisper-tiny's), one training step of the whole model as count_hf now builds it, the
same step of the decoder alone, and their ratio. Encoder and decoder lengths are both
``--seq-len`` (Whisper's decoder: its max_target_positions, 448; its encoder: the config's
30 s window).

    python benchmarks/seq2seq_decoder_only.py [--seq-len 1024]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TYPES = ("bart", "marian", "mbart", "pegasus", "whisper")


def decoder_alone(model_type: str, seq_len: int) -> int:
    """One step of the type's causal LM (its decoder alone), as count_hf built it before."""
    import torch
    from transformers import AutoModelForCausalLM

    from auditor.counting import count_step
    from auditor.counting.hf import example_inputs, load_config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(load_config({"model_type": model_type}))
    model.train()
    return count_step(model, example_inputs(model, 1, seq_len), tokens=seq_len).total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    args = parser.parse_args()
    from auditor.counting.hf import count_hf, default_seq_len, load_config

    print("| type | counted class | whole step | decoder alone | decoder alone / whole |\n|---|---|---|---|---|")
    for model_type in TYPES:
        seq = min(args.seq_len, default_seq_len(load_config({"model_type": model_type})))
        whole = count_hf({"model_type": model_type}, seq_len=seq)
        alone = decoder_alone(model_type, seq)
        print(f"| {model_type} (seq {seq}) | {whole.model_class} | {whole.total:,} | {alone:,} | "
              f"{alone / whole.total:.2f}x |")


if __name__ == "__main__":
    main()
