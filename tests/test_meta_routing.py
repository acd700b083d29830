"""Mixture-of-experts models on meta: hand-written expert loops (DBRX, JetMoE) equal a CPU count with
real routing; expert settings read where each model keeps them (DBRX, JetMoE, Gemma 4)."""
from collections import Counter

import pytest
import torch

from auditor.counting import count_step
from auditor.counting.hf import build_model, example_inputs, load_config

D, FF, E, K, LAYERS, BATCH, SEQ = 64, 128, 8, 2, 2, 2, 32
T = BATCH * SEQ

CONFIGS = {
    "dbrx": {"model_type": "dbrx", "vocab_size": 128, "d_model": D, "n_layers": LAYERS, "n_heads": 4,
             "max_seq_len": 128, "attn_config": {"kv_n_heads": 2, "rope_theta": 1e4, "clip_qkv": 8.0},
             "ffn_config": {"hidden_size": D, "ffn_hidden_size": FF, "moe_num_experts": E, "moe_top_k": K}},
    "jetmoe": {"model_type": "jetmoe", "vocab_size": 128, "hidden_size": D, "intermediate_size": FF,
               "num_hidden_layers": LAYERS, "num_key_value_heads": 2, "kv_channels": 16,
               "num_local_experts": E, "num_experts_per_tok": K, "max_position_embeddings": 128},
}
# The expert matmuls of one layer's feed-forward block, training step (forward, then input and
# weight gradients: 3x): DBRX's GLU w1, v1, w2 and JetMoE's input_linear (d -> 2 ff) and
# output_linear (ff -> d) are both 3 matmuls' worth of 2 T k d ff.
FFN_EXPERTS = {"dbrx": ".ffn.experts", "jetmoe": ".mlp."}


def count(model_type: str, device: str):
    torch.manual_seed(0)
    model = build_model(load_config(CONFIGS[model_type]), device)
    return count_step(model, example_inputs(model, BATCH, SEQ))


def by_module(result) -> Counter:
    out = Counter()
    for (phase, module, _op), v in result.records.items():
        out[phase, module] += v  # attention is one fused op on CPU, two bmm on meta: same FLOPs
    return out


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_meta_count_equals_cpu_count_with_real_routing(model_type):
    cpu, meta = count(model_type, "cpu"), count(model_type, "meta")
    assert meta.total == cpu.total and meta.complete and cpu.complete
    assert by_module(meta) == by_module(cpu)
    assert any("through one expert's matmuls" in a for a in meta.assumptions)
    assert not any("through one expert's matmuls" in a for a in cpu.assumptions)
    experts = sum(v for (_, module), v in by_module(meta).items() if FFN_EXPERTS[model_type] in module
                  and not module.endswith("router") and ".router." not in module)
    assert experts == LAYERS * 3 * 3 * 2 * T * K * D * FF


def test_the_meta_forwards_are_put_back():
    model = build_model(load_config(CONFIGS["dbrx"]), "meta")
    count_step(model, example_inputs(model, BATCH, SEQ))
    assert all("forward" not in vars(m) for m in model.modules())


@pytest.mark.parametrize("model_type, routed_per_layer", [
    ("dbrx", 3 * E * FF * D),                                  # GLU w1, v1, w2, stacked as [E * ff, d]
    ("jetmoe", E * 2 * FF * D + E * FF * D + 2 * E * 32 * D),  # MLP experts, and attention experts (16 x 2 heads)
])
def test_active_parameters_count_k_of_e_routed_experts(model_type, routed_per_layer):
    """DBRX keeps its expert settings in ffn_config; JetMoE's experts are stacked [E, out, in]
    tensors under modules not named "experts". Both: total less (1 - k/E) of the routed weights."""
    from auditor.counting.modelinfo import model_info

    model = build_model(load_config(CONFIGS[model_type]))
    info = model_info(model)
    total = sum(p.numel() for p in model.parameters())
    assert (info.experts, info.top_k, info.parameters) == (E, K, total)
    assert info.active_parameters == total - LAYERS * routed_per_layer * (E - K) // E


GEMMA4 = {"model_type": "gemma4_text", "vocab_size": 128, "hidden_size": D, "intermediate_size": FF,
          "moe_intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 16, "num_experts": E, "max_position_embeddings": 128}


def test_gemma4_preflights_although_its_config_refuses_global_per_layer_reads(tmp_path):
    """transformers' Gemma 4 config raises its own error (not AttributeError) when a per-layer
    setting such as head_dim is read globally; preflight must neither crash nor guess."""
    import json

    from auditor.inputs.run_config import load_run_config
    from auditor.preflight import run_preflight

    (tmp_path / "g4.json").write_text(json.dumps(GEMMA4))
    (tmp_path / "run.yaml").write_text("run: g4\nmodel: {hf_config: g4.json}\ndata: {tokens: 6400, seq_len: 64}\n")
    result = run_preflight(load_run_config(tmp_path / "run.yaml"))
    assert [e.method for e in result.estimates] == ["counted", "analytic"]
    # experts configured, MoE block off: dense, and no mixture-of-experts assumption
    assert result.model["active_parameters"] == result.model["parameters"]
    assert not any("mixture of experts" in a for e in result.estimates for a in e.assumptions)


@pytest.mark.slow
def test_gemma4_moe_block_counts_k_of_e_experts():
    from auditor.counting.modelinfo import model_info
    from auditor.counting.moe import is_moe

    config = {**GEMMA4, "enable_moe_block": True, "top_k_experts": K}
    counts = {}
    for device in ("cpu", "meta"):
        torch.manual_seed(0)
        model = build_model(load_config(config), device)
        counts[device] = count_step(model, example_inputs(model, BATCH, SEQ))
    assert counts["meta"].total == counts["cpu"].total
    assert is_moe(model) and not is_moe(build_model(load_config(GEMMA4)))
    info = model_info(model)
    routed_per_layer = E * (2 * 32) * D + E * D * 32  # experts.gate_up_proj [E, 2 x 32, d], down_proj [E, d, 32]
    assert (info.experts, info.top_k) == (E, K)
    assert info.active_parameters == info.parameters - 3 * routed_per_layer * (E - K) // E


def test_a_library_error_over_several_lines_is_reported_on_one(tmp_path):
    from auditor.counting.step import CountingError, error_text

    err = ImportError("\nTimmWrapperModel requires the timm library but it was not found in your environment.\n"
                      "You can install it with pip.")
    assert error_text(err) == ("ImportError: TimmWrapperModel requires the timm library but it was not found in "
                               "your environment. You can install it with pip.")
    assert error_text(ValueError("x" * 1000), with_type=False) == "x" * 597 + "..."
    with pytest.raises(CountingError) as caught:
        load_config({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 5, "head_dim": 7,
                     "rope_parameters": "\n\nnot a mapping\n"})
    assert "\n" not in str(caught.value)
