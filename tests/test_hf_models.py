"""Hugging Face models from configs: exact closed forms, meta == real weights, repeated == full."""
import pytest
import torch
from transformers import GPT2Config, LlamaConfig, MixtralConfig, T5Config

from auditor.counting import count_step
from auditor.counting.hf import build_model, count_hf, example_inputs


def count(config, device="meta", batch=2, seq=16, **kw):
    model = build_model(config, device)
    return count_step(model, example_inputs(model, batch, seq), tokens=batch * seq, **kw)


def matmul_params(model) -> int:
    """Parameters that enter matrix products: every nn.Linear / Conv1D weight, lm_head included."""
    return sum(m.weight.numel() for m in model.modules()
               if type(m).__name__ in ("Linear", "Conv1D") and m.weight is not None)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_gpt2_closed_form(device):
    d, layers, vocab, b, s = 64, 2, 100, 2, 16
    cfg = GPT2Config(n_embd=d, n_layer=layers, n_head=4, vocab_size=vocab, n_positions=32)
    r = count(cfg, device, b, s)
    t = b * s
    block = 2 * t * (d * 3 * d + d * d + d * 4 * d + 4 * d * d) + 2 * (2 * b * s * s * d)
    fwd = layers * block + 2 * t * d * vocab
    assert r.forward == fwd
    assert r.backward == 2 * fwd
    assert r.complete


def test_dense_decoder_matches_palm_appendix_b():
    """6N + 12LHQT per token (Chowdhery et al. 2022, App. B), N = parameters in matmuls."""
    L, H, kv, d, seq = 4, 8, 2, 256, 512
    cfg = LlamaConfig(hidden_size=d, intermediate_size=688, num_hidden_layers=L, num_attention_heads=H,
                      num_key_value_heads=kv, vocab_size=1000, max_position_embeddings=seq)
    model = build_model(cfg)
    r = count_step(model, example_inputs(model, 1, seq), tokens=seq)
    q = d // H
    assert r.flops_per_token == 6 * matmul_params(model) + 12 * L * H * q * seq
    assert r.total == seq * r.flops_per_token


def test_llama_405b_shape_within_one_percent_of_palm():
    cfg = {"model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 126,
           "num_attention_heads": 128, "num_key_value_heads": 8, "vocab_size": 128256}
    seq = 8192
    r = count_hf(cfg, seq_len=seq)
    n_all = 405_853_388_800  # every parameter, embeddings included (Llama 3.1 405B)
    palm = 6 * n_all + 12 * 126 * 128 * 128 * seq
    assert abs(r.flops_per_token / palm - 1) < 0.01
    assert r.complete


def mixtral_config(**kw):
    return MixtralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100, num_local_experts=4, num_experts_per_tok=2, **kw)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_mixtral_counts_top_k_experts(device):
    """Closed form over the active (top-k) parameters plus attention; real weights equal meta."""
    d, f, E, k, heads, kv_heads, vocab, L, b, s = 64, 128, 4, 2, 4, 2, 100, 3, 2, 16
    r = count(mixtral_config(), device, b, s)
    t, hd = b * s, d // heads
    active_per_token = (d * d + 2 * d * kv_heads * hd + d * d  # q, k, v, o
                        + d * E  # router
                        + k * (d * 2 * f + f * d))  # k experts: gate+up, down
    attention = 2 * (2 * b * heads * s * s * hd)
    fwd = L * (2 * t * active_per_token + attention) + 2 * t * d * vocab
    assert r.forward == fwd
    assert r.backward == 2 * fwd
    assert r.complete
    assert "aten._grouped_mm" in r.by_op()


def test_repeated_blocks_equal_full_count_for_every_key():
    cfg = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=5, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=120)
    fast = count(cfg)
    full = count(cfg, repeated_blocks=False)
    assert fast.total == full.total
    assert fast.records == full.records  # the same by phase, module and operator
    assert any("repeated blocks" in a for a in fast.assumptions)


def test_repeated_blocks_with_two_kinds_of_block_t5():
    cfg = T5Config(vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=3, num_decoder_layers=4,
                   num_heads=4, feed_forward_proj="relu")
    fast, full = count(cfg), count(cfg, repeated_blocks=False)
    assert fast.records == full.records


def test_t5_encoder_decoder_closed_form():
    d, dkv, h, dff, enc_layers, dec_layers, vocab, b, s = 64, 16, 4, 128, 2, 3, 100, 2, 12
    cfg = T5Config(vocab_size=vocab, d_model=d, d_kv=dkv, d_ff=dff, num_layers=enc_layers,
                   num_decoder_layers=dec_layers, num_heads=h, feed_forward_proj="relu")
    r = count(cfg, "meta", b, s)
    t, inner = b * s, h * dkv
    attention = 2 * (2 * b * h * s * s * dkv)
    ffn = 2 * t * 2 * d * dff
    encoder = 2 * t * 4 * d * inner + attention + ffn
    decoder = (2 * t * 4 * d * inner + attention  # self-attention
               + 2 * t * 4 * d * inner + attention  # cross-attention: q, o on decoder, k, v on encoder tokens
               + ffn)
    fwd = enc_layers * encoder + dec_layers * decoder + 2 * t * d * vocab
    assert r.forward == fwd
    assert r.backward == 2 * fwd


def test_mixtral_repeated_equals_full_on_meta():
    fast, full = count(mixtral_config()), count(mixtral_config(), repeated_blocks=False)
    assert fast.records == full.records and fast.total > 0


def test_llama_without_cache_counts_on_meta_like_on_cpu():
    """use_cache=False sends Llama through mask checks that read data: answered on meta as for
    unpadded sequences, and stated."""
    cfg = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=120, use_cache=False)
    meta, cpu = count(cfg, "meta"), count(cfg, "cpu")
    # The same FLOPs by phase and module; the attention op differs (math path on meta, CPU flash).
    assert meta.by_module() == cpu.by_module() and meta.total == cpu.total
    assert any("unpadded" in a for a in meta.assumptions)


def test_idle_block_list_does_not_stop_the_shortcut():
    class TwoTowers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(4))
            self.vision = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(3))  # unused here

        def forward(self, x):
            for block in self.text:
                x = block(x)
            return x

    r = count_step(TwoTowers(), torch.randn(2, 8))
    assert r.forward == 4 * 2 * 2 * 8 * 8
    assert any("text[0] x4" in a for a in r.assumptions) and not any("not used" in a for a in r.assumptions)
