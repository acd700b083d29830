"""Exact counts of tiny Hugging Face architectures on meta, against closed forms from their configs.

Every expected integer is derived here from the config, one term per matmul: a linear layer is
2 x tokens x in x out, attention 2 x heads x s^2 x (d_qk + d_v) (full context, causal masking
is an assumption), experts k x tokens x one expert's weights x 2. The backward of a matmul whose
operands both need gradients is twice its forward, so a step is three forwards.
"""
from __future__ import annotations

import pytest
import torch

from auditor.counting.hf import count_hf
from auditor.counting.step import count_step

T = 32  # batch 1 x sequence 32
V = 128


def counted(config: dict):
    """Count with and without the repeated-block shortcut; both must agree exactly."""
    fast = count_hf(config, batch=1, seq_len=T)
    full = count_hf(config, batch=1, seq_len=T, repeated_blocks=False)
    assert fast.total == full.total and fast.forward == full.forward
    assert not fast.uncovered and not full.uncovered
    return full


def gqa_attention(h: int, heads: int, kv_heads: int, d: int) -> int:
    """Forward FLOPs of one attention layer: q, k, v, o projections plus QK^T and AV."""
    return 2 * T * h * (heads + 2 * kv_heads) * d + 2 * T * heads * d * h + 2 * 2 * heads * T * T * d


def test_mamba_selective_scan_closed_form():
    h, n, expand, k_conv, layers = 64, 16, 2, 4, 2
    d_in, rank = expand * h, -(-h // 16)
    r = counted(dict(model_type="mamba", vocab_size=V, hidden_size=h, state_size=n, num_hidden_layers=layers,
                     expand=expand, conv_kernel=k_conv, time_step_rank=rank))
    per_layer = (2 * T * h * 2 * d_in                     # in_proj to x and gate z
                 + 2 * d_in * (T + k_conv - 1) * k_conv     # depthwise conv1d, padded output
                 + 2 * T * d_in * (rank + 2 * n)            # x_proj to dt, B, C
                 + 2 * T * rank * d_in                      # dt_proj
                 + 2 * T * d_in * n                         # scan readout y_t = C_t h_t (a matmul)
                 + 2 * T * d_in * h)                        # out_proj
    assert r.forward == layers * per_layer + 2 * T * h * V
    assert r.backward == 2 * r.forward


def test_qwen2_moe_counts_routed_top_k():
    h, heads, kv, d, e, k, i_moe, i_shared, layers = 64, 4, 2, 16, 8, 2, 32, 48, 2
    r = counted(dict(model_type="qwen2_moe", vocab_size=V, hidden_size=h, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=128,
                     moe_intermediate_size=i_moe, shared_expert_intermediate_size=i_shared, num_experts=e,
                     num_experts_per_tok=k, max_position_embeddings=128))
    moe = (2 * T * h * e                      # router
           + k * 2 * T * 3 * h * i_moe         # k routed SwiGLU experts per token
           + 2 * T * 3 * h * i_shared          # shared expert
           + 2 * T * h)                        # shared-expert gate
    assert r.forward == layers * (gqa_attention(h, heads, kv, d) + moe) + 2 * T * h * V
    assert r.total == 3 * r.forward


def test_deepseek_v3_mla_and_routed_experts():
    h, heads, e, k, i_dense, i_moe, layers = 64, 4, 8, 2, 128, 32, 3
    q_rank, kv_rank, nope, rope, v_dim, shared = 32, 16, 8, 8, 16, 1
    r = counted(dict(model_type="deepseek_v3", vocab_size=V, hidden_size=h, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=i_dense,
                     moe_intermediate_size=i_moe, n_routed_experts=e, num_experts_per_tok=k, n_shared_experts=shared,
                     n_group=1, topk_group=1, first_k_dense_replace=1, q_lora_rank=q_rank, kv_lora_rank=kv_rank,
                     qk_nope_head_dim=nope, qk_rope_head_dim=rope, v_head_dim=v_dim, max_position_embeddings=128))
    mla = (2 * T * h * q_rank + 2 * T * q_rank * heads * (nope + rope)          # q down, q up
           + 2 * T * h * (kv_rank + rope) + 2 * T * kv_rank * heads * (nope + v_dim)  # kv down, kv up
           + 2 * T * heads * v_dim * h                                          # o_proj
           + 2 * heads * T * T * (nope + rope) + 2 * heads * T * T * v_dim)     # QK^T, AV
    moe = 2 * T * h * e + k * 2 * T * 3 * h * i_moe + shared * 2 * T * 3 * h * i_moe
    dense_layers = 1
    expected = (layers * mla + dense_layers * 2 * T * 3 * h * i_dense + (layers - dense_layers) * moe
                + 2 * T * h * V)
    assert r.forward == expected
    assert r.backward == 2 * r.forward


def test_llama4_dense_masked_experts_charged_top_k_rest_executed():
    h, heads, kv, d, e, k, i, layers = 64, 4, 2, 16, 4, 1, 32, 2
    r = counted(dict(model_type="llama4_text", vocab_size=V, hidden_size=h, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv, head_dim=d, intermediate_size=i,
                     intermediate_size_mlp=128, num_local_experts=e, num_experts_per_tok=k,
                     max_position_embeddings=128))
    expert = 2 * T * 3 * h * i  # one expert over every token, as Llama 4's bmm runs it
    moe = 2 * T * h * e + k * expert + 2 * T * 3 * h * i  # router, k of E experts, shared expert
    assert r.forward == layers * (gqa_attention(h, heads, kv, d) + moe) + 2 * T * h * V
    # The E - k masked experts ran on the hardware, forward and backward (2x), outside the total.
    assert sum(r.executed.values()) == 3 * layers * (e - k) * expert
    assert r.hardware_total == r.total + 3 * layers * (e - k) * expert


@pytest.mark.parametrize("config", [
    dict(model_type="jamba", num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
         intermediate_size=128, num_experts=4, num_experts_per_tok=2, attn_layer_period=2, attn_layer_offset=1,
         expert_layer_period=2, expert_layer_offset=1, mamba_d_state=16),
    dict(model_type="mamba2", num_hidden_layers=2, num_heads=8, head_dim=16, n_groups=1, state_size=16,
         chunk_size=16, expand=2),
    dict(model_type="falcon_h1", num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
         intermediate_size=128, mamba_d_ssm=128, mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=1,
         mamba_d_state=16, mamba_chunk_size=16),
    dict(model_type="rwkv", num_hidden_layers=2, attention_hidden_size=64, intermediate_size=128,
         context_length=128),
], ids=lambda c: c["model_type"])
def test_hybrid_and_recurrent_models_count_completely(config):
    r = counted({"vocab_size": V, "hidden_size": 64, **config})
    assert r.forward > 2 * T * 64 * V  # more than the LM head alone
    assert r.backward == 2 * r.forward


def test_qwen3_next_counts_the_delta_rule_triangular_solve():
    n_layers, chunk = 4, 64  # the torch chunked delta rule pads the sequence to a 64-token chunk
    r = counted(dict(model_type="qwen3_next", vocab_size=V, hidden_size=64, num_hidden_layers=n_layers,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                     moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=8,
                     num_experts_per_tok=2, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                     linear_value_head_dim=16, layer_types=["linear_attention", "full_attention"] * 2,
                     max_position_embeddings=128))
    # Two unit-lower-triangular solves per linear-attention layer, each with chunk x chunk
    # systems for 4 value heads, right-hand sides of width 16 (values, then keys).
    solve = 2 * 4 * 16 * chunk * (chunk - 1)
    assert r.by_op()["aten.linalg_solve_triangular"]["forward"] == (n_layers // 2) * solve


def test_triangular_solve_formula_exact():
    a = torch.nn.Parameter(torch.eye(8).expand(3, 8, 8).clone())
    b = torch.nn.Parameter(torch.ones(3, 8, 5))

    class Solve(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.solve_triangular(a, b * x, upper=False) + torch.linalg.solve_triangular(
                a, b * x, upper=False, unitriangular=True)

    module = Solve()
    module.register_parameter("a", a)
    module.register_parameter("b", b)
    r = count_step(module, torch.ones(1), repeated_blocks=False)
    # 3 systems x 5 right-hand sides: n^2 each with divisions, n(n-1) with a unit diagonal.
    assert r.by_op()["aten.linalg_solve_triangular"]["forward"] == 3 * 5 * (8 * 8 + 8 * 7)
