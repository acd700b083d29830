"""The analytic method's attention terms for MLA (DeepSeek-V3), where q . k and v head widths differ.

Closed forms, per token, training = 3 x forward, a multiply-add 2 FLOPs:

- QK^T: each of T queries against T keys over d_qk, H heads, L layers: forward 2 L H T d_qk;
- AV: the same over d_v: forward 2 L H T d_v;
- PaLM (Chowdhery et al. 2022, App. B) counts both: 3 x 2 L H T (d_qk + d_v) = 6 L H T (d_qk + d_v),
  which is its 12 L H Q T when d_qk = d_v = Q;
- Kaplan et al. 2020 (Table 1) counts the scores alone: 3 x 2 L T (H d_qk) = 6 L T d_attn.

The N-dependent part (6N) is the same in all three figures, so each test checks the attention
term as the figure minus 6ND, which leaves out nothing but attention.
"""
from __future__ import annotations

import pytest
import yaml
from transformers import CONFIG_MAPPING

from auditor.counting.modelinfo import attention_widths
from auditor.methods import analytic_estimate
from auditor.preflight import assess

T, SEQUENCES = 32, 1000
D = T * SEQUENCES
L, H = 3, 4
NOPE, ROPE, V_DIM = 12, 4, 8                    # q . k is 12 + 4 = 16 wide, v 8, head_dim (rope) 4
DEEPSEEK_TINY = {"model_type": "deepseek_v3", "vocab_size": 128, "hidden_size": 64, "num_hidden_layers": L,
                 "num_attention_heads": H, "num_key_value_heads": H, "intermediate_size": 128,
                 "moe_intermediate_size": 32, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1,
                 "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1, "q_lora_rank": 32, "kv_lora_rank": 16,
                 "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE, "v_head_dim": V_DIM,
                 "max_position_embeddings": 128}
LLAMA_TINY = {"model_type": "llama", "vocab_size": 128, "hidden_size": 64, "num_hidden_layers": L,
              "num_attention_heads": H, "num_key_value_heads": 2, "intermediate_size": 128}


def preflight(tmp_path, hf_config: dict):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"run": "mla", "model": {"hf_config": hf_config},
                                    "data": {"tokens": D, "seq_len": T}}))
    result = assess(path)
    return result, {e.method: e for e in result.estimates}


def test_deepseek_v3_attention_terms_use_the_qk_and_v_widths(tmp_path):
    result, by = preflight(tmp_path, DEEPSEEK_TINY)
    analytic, qk = by["analytic"], NOPE + ROPE
    six_nd = analytic.flops
    assert analytic.details["palm"] - six_nd == 6 * L * H * T * (qk + V_DIM) * D
    assert analytic.details["kaplan"] - six_nd == 6 * L * T * H * qk * D
    assert result.model["qk_head_dim"] == qk and result.model["v_head_dim"] == V_DIM
    assert result.model["head_dim"] == ROPE              # the config's head_dim: the rope part only
    assert f"attention widths: q . k {H} heads x {qk} = {H * qk}, v {H} heads x {V_DIM} = {H * V_DIM} " \
           "(the scores over q . k, the values over v)" in analytic.assumptions
    assert any(a.startswith("PaLM, Chowdhery et al. 2022 App. B: C = (6N + 6 L H T (d_qk + d_v))")
               for a in analytic.assumptions)


def test_the_counted_context_quadratic_work_is_the_palm_attention_term(tmp_path):
    """The counter measures the work quadratic in the context (counts at T and T/2); for MLA it is
    the PaLM term with the two widths, per sequence: 6 L H T^2 (d_qk + d_v)."""
    _, by = preflight(tmp_path, DEEPSEEK_TINY)
    assert by["counted"].details["context_quadratic_flops"] == 6 * L * H * T * T * (NOPE + ROPE + V_DIM)


def test_llama_attention_terms_are_unchanged(tmp_path):
    result, by = preflight(tmp_path, LLAMA_TINY)
    analytic, head = by["analytic"], 64 // H
    six_nd = analytic.flops
    assert analytic.details["palm"] - six_nd == 12 * L * H * head * T * D
    assert analytic.details["kaplan"] - six_nd == 6 * L * T * H * head * D
    assert result.model["qk_head_dim"] == result.model["v_head_dim"] == result.model["head_dim"] == head
    assert f"attention widths: q . k {H} heads x {head} = {H * head}, v {H} heads x {head} = {H * head}" \
        in analytic.assumptions
    assert any(a.startswith("PaLM, Chowdhery et al. 2022 App. B: C = (6N + 12 L H Q T)") for a in analytic.assumptions)


def test_deepseek_v3_published_shape():
    # DeepSeek-V3: 61 layers, 128 heads, q . k 128 + 64 = 192, v 128, 4k context; 37B active, 14.8T tokens
    n, d, layers, heads, ctx = 37 * 10**9, 148 * 10**11, 61, 128, 4096
    est = analytic_estimate(671 * 10**9, d, active_params=n, n_layer=layers, n_ctx=ctx, n_heads=heads,
                            head_dim=192, v_head_dim=128)
    assert est.details["palm"] == (6 * n + 6 * layers * heads * ctx * (192 + 128)) * d
    assert est.details["kaplan"] == (6 * n + 6 * layers * ctx * heads * 192) * d
    assert est.details["attention_shape"] == {"n_layer": layers, "n_ctx": ctx, "d_attn": heads * 192,
                                              "d_v": heads * 128}


@pytest.mark.parametrize("model_type,widths", [
    ("deepseek_v3", (192, 128)),       # qk_nope 128 + qk_rope 64; v 128 (head_dim is 64, the rope part)
    ("deepseek_v2", (192, 128)),
    ("mimo_v2_flash", (192, 128)),     # head_dim 192 for q . k, v_head_dim 128
    ("llama", (128, 128)),             # head_dim 128 for both
])
def test_attention_widths_from_the_released_configs(model_type, widths):
    config = CONFIG_MAPPING[model_type]()
    assert attention_widths(config, config.head_dim) == widths


def test_v_head_dim_needs_the_number_of_heads():
    with pytest.raises(ValueError, match="v_head_dim needs n_heads"):
        analytic_estimate(10**9, 10**12, n_layer=2, n_ctx=8, d_attn=64, v_head_dim=8)
