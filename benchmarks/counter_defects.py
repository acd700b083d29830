"""Reproductions of the counter defects the architecture sweep found (docs/architectures.md).

    python benchmarks/counter_defects.py            # every one
    python benchmarks/counter_defects.py 3 5        # these

Each prints what the counter gives beside what it should, and says DEFECT or fixed; the exit
status is the number of defects still present. Nothing here is imported by the tool.
"""
from __future__ import annotations

import sys

import torch

from auditor.counting import count_step


def _verdict(ok: bool, text: str) -> bool:
    print(("fixed    " if ok else "DEFECT   ") + text)
    return ok


def none_in_module_list() -> bool:
    """1. The shortcut crashes on a ModuleList holding None (Informer's conv_layers)."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), None])

        def forward(self, x):
            return self.blocks[1](self.blocks[0](x))

    x = torch.randn(2, 4)
    full = count_step(M(), x, repeated_blocks=False).total
    try:
        got = count_step(M(), x).total
    except Exception as exc:  # noqa: BLE001
        return _verdict(False, f"1 None in a ModuleList: full count {full:,}; with the shortcut {exc}")
    return _verdict(got == full, f"1 None in a ModuleList: {got:,} with the shortcut, {full:,} without")


def layerdrop() -> bool:
    """2. LayerDrop: a count of a training step is a random draw (wav2vec2's default config)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    with torch.device("meta"):
        model = Wav2Vec2ForCTC(Wav2Vec2Config(apply_spec_augment=False))
    model.train()
    totals = []
    for seed in range(6):
        torch.manual_seed(seed)
        totals.append(count_step(model, {"input_values": torch.zeros(1, 16000, device="meta")},
                                 repeated_blocks=False).total)
    seen = ", ".join(f"{t:,}" for t in totals)
    return _verdict(len(set(totals)) == 1, "2 LayerDrop: wav2vec2 default, seeds 0-5: " + seen)


def forward_called_directly() -> bool:
    """3. The shortcut drops blocks called through .forward() (SqueezeBERT's encoder)."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(4))

        def forward(self, x):
            for block in self.blocks:
                x = block.forward(x)
            return x

    x = torch.randn(2, 8)
    got, full = count_step(M(), x).total, count_step(M(), x, repeated_blocks=False).total
    return _verdict(got == full, f"3 blocks called by .forward(): {got:,} with the shortcut, {full:,} without")


def squeezebert() -> bool:
    """3, in a real model: transformers' default SqueezeBERT masked LM at 512 tokens."""
    from transformers import SqueezeBertConfig, SqueezeBertForMaskedLM

    totals = []
    for repeated in (True, False):
        with torch.device("meta"):
            model = SqueezeBertForMaskedLM(SqueezeBertConfig())
        model.train()
        ids = torch.zeros(1, 512, dtype=torch.long, device="meta")
        totals.append(count_step(model, {"input_ids": ids, "labels": ids}, repeated_blocks=repeated).total)
    return _verdict(totals[0] == totals[1], f"3 squeezebert: {totals[0]:,} with the shortcut, {totals[1]:,} without "
                                           f"({totals[0] / totals[1]:.2f}x)")


def early_exit() -> bool:
    """4. On meta a boolean read that ends a loop is answered True (SLANet's decoder)."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.step = torch.nn.Linear(4, 4)

        def forward(self, x):
            for _ in range(10):
                x = self.step(x)
                if (x > 1e9).all():      # an early exit on data: never taken on this data
                    break
            return x

    cpu = count_step(M(), torch.zeros(2, 4)).forward
    with torch.device("meta"):
        meta_model = M()
    meta = count_step(meta_model, torch.zeros(2, 4, device="meta")).forward
    return _verdict(meta == cpu, f"4 early exit on data: forward {meta:,} on meta, {cpu:,} on the CPU")


def cache_mutated_in_place() -> bool:
    """5. The meta-kernel cache hands out a tensor the model reshaped in place (pocket_tts)."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(32, 8))

        def forward(self, x):
            a = x @ self.w
            a.squeeze_(0)                 # in place: (1, 8) -> (8,)
            b = x @ self.w                # the same product again: (1, 8)
            return torch.mm(b, self.w.t()).sum() + a.sum()

    cpu = count_step(M(), torch.zeros(1, 32)).total
    with torch.device("meta"):
        meta_model = M()
    try:
        meta = count_step(meta_model, torch.zeros(1, 32, device="meta")).total
    except Exception as exc:  # noqa: BLE001
        return _verdict(False, f"5 in-place reshape of a cached output: CPU {cpu:,}; meta {exc}")
    return _verdict(meta == cpu, f"5 in-place reshape of a cached output: meta {meta:,}, CPU {cpu:,}")


def image_tokens_unchecked() -> bool:
    """6. On meta a multimodal model's tokens-match-features check is answered True (LLaVA)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=32, patch_size=8, hidden_size=64,
                           num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        text_config=dict(model_type="llama", vocab_size=128, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=128),
        image_token_index=100)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    ids = torch.zeros(1, 16, dtype=torch.long, device="meta")     # no image tokens: 16 are needed
    try:
        got = count_step(model, {"input_ids": ids, "pixel_values": torch.zeros(1, 3, 32, 32, device="meta"),
                                 "labels": ids}).total
    except Exception as exc:  # noqa: BLE001
        return _verdict(True, f"6 image tokens missing: refused on meta ({type(exc).__name__})")
    return _verdict(False, f"6 image tokens missing: counted {got:,} FLOPs on meta (the CPU refuses the inputs)")


def nested_outputs() -> bool:
    """7. default_loss skips tensors nested in the output (V-JEPA 2's predictor_output)."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.predictor = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            h = self.encoder(x)
            return {"last_hidden_state": h, "predictor_output": {"last_hidden_state": self.predictor(h)}}

    def every_tensor(out):
        return out["last_hidden_state"].sum() + out["predictor_output"]["last_hidden_state"].sum()

    x = torch.randn(2, 4)
    got = count_step(M(), x).backward
    want = count_step(M(), x, loss_fn=every_tensor).backward
    return _verdict(got == want, f"7 nested outputs: backward {got:,} with the default loss, {want:,} with every output")


DEFECTS = {"1": none_in_module_list, "2": layerdrop, "3": forward_called_directly, "squeezebert": squeezebert,
           "4": early_exit, "5": cache_mutated_in_place, "6": image_tokens_unchecked,
           "7": nested_outputs}


def main(argv: list[str]) -> int:
    import transformers

    transformers.logging.set_verbosity_error()
    wanted = argv or list(DEFECTS)
    return sum(not DEFECTS[name]() for name in wanted)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
