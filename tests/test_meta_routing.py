"""Hand-written expert loops (DBRX, JetMoE) counted on meta equal a CPU count with real routing."""
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
