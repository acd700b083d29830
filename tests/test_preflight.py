"""Preflight from a config, by every method: exact closed forms on tiny models, published figures on samples.

Every expected number here comes from a closed form (PaLM App. B: 6N + 12 L H Q T a token, with N the
parameters that enter matmuls; C = count x hours x 3600 x peak x utilization; 6ND) or from the figures the
sample configs cite in their comments, never from the program's output.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from auditor.inputs.run_config import load_run_config
from auditor.preflight import run_preflight

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_runs"
SAMPLE_FILES = sorted(SAMPLES.glob("*.yaml"))

# A tiny dense Llama: GQA (4 query heads, 2 key/value heads), untied lm_head.
D, FF, L, H, KV, V = 64, 128, 2, 4, 2, 100
HD = D // H
TINY = (f"{{model_type: llama, hidden_size: {D}, intermediate_size: {FF}, num_hidden_layers: {L}, "
        f"num_attention_heads: {H}, num_key_value_heads: {KV}, vocab_size: {V}}}")


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def preflight_text(tmp_path: Path, text: str):
    return run_preflight(load_run_config(write(tmp_path, text)))


def by_method(result) -> dict:
    return {e.method: e for e in result.estimates}


def tiny_matmul_params() -> int:
    """Parameters that enter matmuls, from the config sizes: q, k, v, o, gate, up, down, lm_head."""
    attention = D * H * HD + 2 * D * KV * HD + H * HD * D
    mlp = 3 * D * FF
    return L * (attention + mlp) + V * D


def tiny_total_params() -> int:
    """Every parameter: embedding, the matmul weights and the RMSNorm weights (2 a layer + final)."""
    return V * D + tiny_matmul_params() + L * 2 * D + D


def palm_per_token(n_matmul: int, layers: int, heads: int, head_dim: int, seq_len: int) -> int:
    """Chowdhery et al. 2022, App. B: 6N + 12 L H Q T FLOPs a token."""
    return 6 * n_matmul + 12 * layers * heads * head_dim * seq_len


# ----- a tiny dense Llama, exactly

def test_tiny_model_matmul_params_agree_with_the_built_model():
    """The config-size formula for N is the sum of every nn.Linear weight of the built model."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(model_type="llama", hidden_size=D, intermediate_size=FF, num_hidden_layers=L,
                         num_attention_heads=H, num_key_value_heads=KV, vocab_size=V)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert sum(m.weight.numel() for m in linears) == tiny_matmul_params()
    assert all(m.bias is None for m in linears)
    assert sum(p.numel() for p in model.parameters()) == tiny_total_params()


def test_pathed_hf_config_is_read_once_and_counted_as_inline(tmp_path, monkeypatch):
    """The cache key and the model come from one read of config.json (a file that changed
    between two reads would be counted under the other one's key)."""
    import json

    from auditor import preflight

    hf = tmp_path / "config.json"
    hf.write_text(json.dumps(yaml.safe_load(TINY)))
    from auditor import files as safefiles
    from auditor.counting import hf as hf_module

    reads = []
    real_read = safefiles.read_regular
    spy = lambda path, *a, **k: (reads.append(Path(path)), real_read(path, *a, **k))[1]  # noqa: E731
    monkeypatch.setattr(safefiles, "read_regular", spy)      # every file reader goes through it
    monkeypatch.setattr(hf_module, "read_regular", spy)
    monkeypatch.setattr(preflight, "_COUNTED", {})
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(tmp_path / "cache"))
    pathed = run_preflight(load_run_config(write(tmp_path, "run: tiny\nmodel: {hf_config: config.json}\n"
                                                           "data: {tokens: 160, seq_len: 16}\n")))
    assert [p for p in reads if p.name == "config.json"] == [hf]
    inline = preflight_text(tmp_path, f"run: tiny\nmodel: {{hf_config: {TINY}}}\ndata: {{tokens: 160, seq_len: 16}}\n")
    assert by_method(pathed)["counted"].flops == by_method(inline)["counted"].flops == 160 * palm_per_token(
        tiny_matmul_params(), L, H, HD, 16)


@pytest.mark.parametrize("k", [1, 1000, 123_457])
def test_tiny_llama_counted_is_palm_exactly(tmp_path, k):
    T = 16
    result = preflight_text(tmp_path, f"run: tiny\nmodel: {{hf_config: {TINY}}}\n"
                                      f"data: {{tokens: {k * T}, seq_len: {T}}}\n")
    est = by_method(result)
    counted = est["counted"]
    per_token = palm_per_token(tiny_matmul_params(), L, H, HD, T)
    assert counted.flops_per_token == per_token
    assert counted.flops == k * per_token * T
    assert type(counted.flops) is int and type(counted.flops_per_token) is int
    assert counted.uncovered_ops == []
    # the low end takes off half of the context-quadratic attention work (causal masking): 6 L H Q T a token
    assert counted.low == k * T * (6 * tiny_matmul_params() + 6 * L * H * HD * T)
    from auditor.methods.counted import ELEMENTWISE_ALLOWANCE
    assert counted.high == math.ceil(counted.flops * (1 + ELEMENTWISE_ALLOWANCE))
    assert counted.low <= counted.flops <= counted.high
    # the analytic method beside it: 6 N D with N every parameter (the EU guidelines' 6PD)
    analytic = est["analytic"]
    assert analytic.flops == 6 * tiny_total_params() * k * T
    assert analytic.flops_per_token == 6 * tiny_total_params()
    assert analytic.low <= analytic.flops <= analytic.high
    # the central figure and the run's range
    assert result.central.method == "counted"
    assert result.total_flops == counted.flops
    assert result.tokens == k * T
    assert result.low == min(counted.low, analytic.low) and result.high == max(counted.high, analytic.high)
    assert result.low <= result.total_flops <= result.high
    assert "hardware" in result.skipped and "counted" not in result.skipped
    assert result.uncovered_ops == []


@pytest.mark.parametrize("steps,batch,epochs,tokens", [
    (7, 3, "2", 7 * 3 * 16 * 2),
    (7, 4, "1.5", 7 * 4 * 16 * 3 // 2),
    (5, 1, "1", 5 * 16),
])
def test_steps_form(tmp_path, steps, batch, epochs, tokens):
    T = 16
    result = preflight_text(tmp_path, f"run: tiny-steps\nmodel: {{hf_config: {TINY}}}\n"
                                      f"data: {{steps: {steps}, batch_size: {batch}, seq_len: {T}, epochs: {epochs}}}\n")
    assert result.tokens == tokens
    counted = by_method(result)["counted"]
    per_token = palm_per_token(tiny_matmul_params(), L, H, HD, T)
    assert counted.flops == tokens * per_token
    assert counted.flops_per_token == per_token
    assert by_method(result)["analytic"].flops == 6 * tiny_total_params() * tokens


def test_no_seq_len_skips_the_count_with_a_reason(tmp_path):
    result = preflight_text(tmp_path, f"run: tiny\nmodel: {{hf_config: {TINY}}}\ndata: {{tokens: 1e9}}\n")
    assert "counted" not in by_method(result)
    assert "seq_len" in result.skipped["counted"]
    assert result.central.method == "analytic"
    assert result.total_flops == 6 * tiny_total_params() * 10 ** 9


# ----- a bare parameter count

def test_bare_parameters_is_analytic_six_nd(tmp_path):
    result = preflight_text(tmp_path, "run: bare\nmodel: {parameters: 7e9}\ndata: {tokens: 2e12, seq_len: 4096}\n")
    est = by_method(result)
    assert "counted" not in est and result.skipped["counted"]
    assert result.central.method == "analytic"
    assert result.total_flops == est["analytic"].flops == 6 * 7 * 10 ** 9 * 2 * 10 ** 12
    assert est["analytic"].flops_per_token == 6 * 7 * 10 ** 9
    assert result.low <= result.total_flops <= result.high
    assert result.model["parameters"] == 7 * 10 ** 9


def test_bare_moe_parameters_use_the_active_count(tmp_path):
    result = preflight_text(tmp_path, "run: bare-moe\nmodel: {parameters: 46.7e9, active_parameters: 12.9e9}\n"
                                      "data: {tokens: 8e12}\n")
    analytic = by_method(result)["analytic"]
    assert result.total_flops == analytic.flops == 6 * 12_900_000_000 * 8 * 10 ** 12
    assert analytic.flops_per_token == 6 * 12_900_000_000
    assert analytic.high < 6 * 46_700_000_000 * 8 * 10 ** 12


# ----- the hardware method (hardware alone is impossible: data is required, so it rides beside 6ND)

@pytest.mark.parametrize("acc,count,hours,util", [
    ("H100-SXM", 8, "10", "0.4"),
    ("H100-SXM", 16384, "1882", "0.40"),
    ("A100-SXM", 3, "1.5", "0.35"),
    ("TPU-v4", 1024, "0.25", "0.5"),
])
def test_hardware_estimate_is_exact(tmp_path, acc, count, hours, util):
    from auditor.methods.hardware import get_accelerator

    result = preflight_text(tmp_path, f"run: hw\nmodel: {{parameters: 1e9}}\ndata: {{tokens: 1e12}}\n"
                                      f"hardware: {{accelerator: {acc}, count: {count}, hours: {hours}, "
                                      f"utilization: {util}}}\n")
    hw = by_method(result)["hardware"]
    peak = get_accelerator(acc).peak()
    exact = count * Fraction(hours) * 3600 * peak * Fraction(util)
    assert exact.denominator == 1, "pick inputs whose product is a whole number"
    assert hw.flops == int(exact) and type(hw.flops) is int
    assert hw.low <= hw.flops <= hw.high
    assert result.central.method == "analytic"           # hardware is never preferred to a model-based figure
    assert result.high >= hw.high and result.low <= hw.low


# ----- the sample runs

@pytest.fixture(scope="module")
def sample():
    """sample(name): the sample's Preflight, computed once for the module (0.1-3 s each on meta)."""
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = run_preflight(load_run_config(SAMPLES / name))
        return cache[name]
    return get


def within(value: int, target: float, rel: float) -> bool:
    return abs(value - target) <= rel * target


def sample_hf_config(name: str):
    """The sample's model config as transformers fills it in (its defaults for keys the sample leaves out)."""
    import json

    from transformers import CONFIG_MAPPING

    text = (SAMPLES / name).read_text()
    spec = yaml.safe_load(text)["model"]["hf_config"]
    if isinstance(spec, str):
        spec = json.loads((SAMPLES / spec).read_text())
    fields = {k: v for k, v in spec.items() if k != "model_type"}
    return CONFIG_MAPPING[spec["model_type"]](**fields), yaml.safe_load(text)["data"]["seq_len"]


def closed_form_per_token(name: str) -> int:
    """6N + 12 L H Q T a token from the config sizes (N: parameters entering matmuls, active experts only)."""
    c, T = sample_hf_config(name)
    mt = c.model_type
    if mt == "gpt2":
        d, layers, ff = c.n_embd, c.n_layer, c.n_inner or 4 * c.n_embd
        n = layers * (4 * d * d + 2 * d * ff) + c.vocab_size * d          # c_attn, c_proj, c_fc, mlp c_proj; lm_head
        return palm_per_token(n, layers, 1, d, T)                           # H x Q = d
    if mt in ("llama", "mixtral"):
        d, layers, heads = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
        hd = getattr(c, "head_dim", None) or d // heads
        attention = d * heads * hd + 2 * d * c.num_key_value_heads * hd + heads * hd * d
        if mt == "mixtral":
            mlp = c.num_experts_per_tok * 3 * d * c.intermediate_size + d * c.num_local_experts   # + router
        else:
            mlp = 3 * d * c.intermediate_size
        n = layers * (attention + mlp) + c.vocab_size * d
        return palm_per_token(n, layers, heads, hd, T)
    if mt == "deepseek_v3":
        d, layers, heads = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
        qk, v = c.qk_nope_head_dim + c.qk_rope_head_dim, c.v_head_dim
        attention = (d * c.q_lora_rank + c.q_lora_rank * heads * qk                         # q down, q up
                     + d * (c.kv_lora_rank + c.qk_rope_head_dim)                            # kv down (+ rope key)
                     + c.kv_lora_rank * heads * (c.qk_nope_head_dim + v) + heads * v * d)   # kv up, output
        dense = 3 * d * c.intermediate_size
        moe = d * c.n_routed_experts + 3 * d * c.moe_intermediate_size * (c.n_shared_experts + c.num_experts_per_tok)
        k = c.first_k_dense_replace
        n = layers * attention + k * dense + (layers - k) * moe + c.vocab_size * d
        # MLA: QK^T over qk dims, AV over v dims: 2 T H (qk + v) a token a layer, x3 for training
        return 6 * n + 6 * layers * heads * (qk + v) * T
    if mt == "t5":
        d, inner, ff = c.d_model, c.num_heads * c.d_kv, c.d_ff
        ffn = (3 if c.is_gated_act else 2) * d * ff
        enc = c.num_layers * (4 * d * inner + ffn)
        dec = c.num_decoder_layers * (8 * d * inner + ffn)                # self- and cross-attention
        n = enc + dec + c.vocab_size * d
        # decoder length = seq_len (the sample's stated assumption): encoder self, decoder self, cross
        return 6 * n + 12 * inner * T * (c.num_layers + 2 * c.num_decoder_layers)
    raise AssertionError(f"no closed form for {mt}")


def test_samples_are_there():
    names = {p.name for p in SAMPLE_FILES}
    assert {"gpt3-175b.yaml", "llama-3.1-405b.yaml", "mixtral-8x7b.yaml", "deepseek-v3.yaml", "t5-11b.yaml",
            "llama-3.1-8b-finetune.yaml", "chinchilla-70b.yaml", "gpt2-small-scratch.yaml"} <= names


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.stem for p in SAMPLE_FILES])
def test_every_sample_preflights_completely(path, sample):
    result = sample(path.name)
    assert result.uncovered_ops == []
    assert all(e.uncovered_ops == [] for e in result.estimates)
    assert result.central.method == "counted"
    assert result.low <= result.total_flops <= result.high
    for e in result.estimates:
        assert e.low <= e.flops <= e.high
        assert all(type(x) is int for x in (e.flops, e.low, e.high))


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.stem for p in SAMPLE_FILES])
def test_sample_counted_per_token_is_the_closed_form(path, sample):
    counted = by_method(sample(path.name))["counted"]
    assert counted.flops_per_token == closed_form_per_token(path.name)


def test_gpt3_published(sample):
    # Brown et al. 2020 Table D.1: 3.14e23 FLOP (6ND, N = 174.6B, D = 300B)
    result = sample("gpt3-175b.yaml")
    analytic = by_method(result)["analytic"]
    assert within(analytic.flops, 3.14e23, 0.01)
    assert within(result.model["parameters"], 174.6e9, 0.005)
    assert result.tokens == 300 * 10 ** 9


def test_llama_405b_published(sample):
    # Llama 3 paper section 3.4: 3.8e25 FLOP; 405B parameters, 15.6T tokens
    result = sample("llama-3.1-405b.yaml")
    est = by_method(result)
    assert within(est["analytic"].flops, 3.8e25, 0.01)
    assert est["hardware"].low <= 3.8e25 <= est["hardware"].high
    assert result.low <= 3.8e25 <= result.high
    from auditor.methods.hardware import get_accelerator
    # 16,384 H100 x 1,882 h at the given 40 % utilization
    assert est["hardware"].flops == 16384 * 1882 * 3600 * get_accelerator("H100-SXM").peak() * 2 // 5
    assert within(result.model["parameters"], 405e9, 0.01)


def test_chinchilla_published(sample):
    # Hoffmann et al. 2022: 5.76e23 FLOP by Appendix F, which the count follows (it adds the embedding lookups
    # and the softmax, a few percent)
    counted = by_method(sample("chinchilla-70b.yaml"))["counted"]
    assert within(counted.flops, 5.76e23, 0.03)


@pytest.mark.parametrize("name,active,total", [
    ("mixtral-8x7b.yaml", 12.9e9, 46.7e9),        # Jiang et al. 2024
    ("deepseek-v3.yaml", 37e9, 671e9),            # DeepSeek-V3 report, Table 1
])
def test_moe_counts_active_parameters(name, active, total, sample):
    result = sample(name)
    counted = by_method(result)["counted"]
    c, T = sample_hf_config(name)
    if c.model_type == "mixtral":
        attention = 12 * c.num_hidden_layers * c.num_attention_heads * (c.hidden_size // c.num_attention_heads) * T
    else:
        attention = 6 * c.num_hidden_layers * c.num_attention_heads * (
            c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim) * T
    share = attention / (6 * active)            # what attention adds over 6 x active parameters
    ratio = counted.flops_per_token / (6 * active)
    # above 6 x active by about the attention share (embedding lookups, outside the count, take a little off)
    assert 1 < ratio <= 1 + share + 0.02, (ratio, share)
    assert ratio >= 1 + share - 0.03, (ratio, share)
    if name.startswith("mixtral"):
        assert ratio <= 1.15                      # attention at 4k context: ~8 % over 6 x active
    # far below 6 x all parameters: the experts a token does not visit do no work for it
    assert counted.flops_per_token < 6 * total / 3
    assert within(result.model["parameters"], total, 0.005)
    assert within(result.model["active_parameters"], active, 0.02)
    # the analytic central figure is 6 x active x D
    assert by_method(result)["analytic"].flops == 6 * result.model["active_parameters"] * result.tokens


def test_deepseek_v3_published(sample):
    # DeepSeek-V3: 6 x 37B active x 14.8T tokens = 3.3e24; 18x that with all 671B
    analytic = by_method(sample("deepseek-v3.yaml"))["analytic"]
    assert within(analytic.flops, 3.3e24, 0.02)
    assert analytic.high < 6 * 671e9 * 14.8e12 / 10


def test_finetune_carries_lineage(sample):
    result = sample("llama-3.1-8b-finetune.yaml")
    assert result.lineage == {"base_model": "llama-3.1-8b", "base_compute_flops": 75 * 10 ** 22,
                              "developer": "other"}
    assert type(result.lineage["base_compute_flops"]) is int
    assert result.to_dict()["lineage"]["base_compute_flops"] == 75 * 10 ** 22
    # the base's own compute: 6 x 8.03B x 15.6T = 7.5e23 (Llama 3 paper)
    assert within(6 * result.model["parameters"] * 15.6e12, 7.5e23, 0.01)


def test_t5_counts_completely(sample):
    result = sample("t5-11b.yaml")
    counted = by_method(result)["counted"]
    assert counted.uncovered_ops == [] and result.uncovered_ops == []
    assert result.central.method == "counted"
    # 6ND with 11.3B parameters and 1.1T tokens: 7.5e22 (the sample's comment)
    assert within(by_method(result)["analytic"].flops, 7.5e22, 0.01)
    assert within(result.model["parameters"], 11.3e9, 0.005)


def _comment_figure(name: str, pattern: str) -> float:
    found = re.search(pattern, (SAMPLES / name).read_text())
    assert found, pattern
    return float(found.group(1))


def test_gpt2_sample_counted_figure_matches_its_comment(sample):
    counted = by_method(sample("gpt2-small-scratch.yaml"))["counted"]
    assert sample("gpt2-small-scratch.yaml").tokens == 2000 * 32 * 256
    assert within(counted.flops, _comment_figure("gpt2-small-scratch.yaml", r"beside ([0-9.e+]+) counted"), 0.05)


def test_gpt2_sample_hardware_figure_matches_its_comment():
    from auditor.methods.hardware import get_accelerator

    stated = _comment_figure("gpt2-small-scratch.yaml", r"that is ([0-9.e+]+) FLOP")
    hours = _comment_figure("gpt2-small-scratch.yaml", r"\(([0-9.]+) h\)")
    assert Fraction(str(hours)) == load_run_config(SAMPLES / "gpt2-small-scratch.yaml").hardware.hours
    closed = 1 * Fraction(str(hours)) * 3600 * get_accelerator("A100-SXM").peak() * Fraction(2, 5)
    assert within(int(closed), stated, 0.05)


# ----- the bundled demo is the sample

def test_demo_files_equal_the_samples():
    data = REPO / "auditor" / "data"
    assert (data / "demo-run.yaml").read_bytes() == (SAMPLES / "gpt2-small-scratch.yaml").read_bytes()
    assert (data / "demo-gpt2.json").read_bytes() == (SAMPLES / "demo-gpt2.json").read_bytes()


def test_demo_run_references_its_model_config_by_a_relative_name():
    spec = yaml.safe_load((REPO / "auditor" / "data" / "demo-run.yaml").read_text())
    assert (REPO / "auditor" / "data" / spec["model"]["hf_config"]).is_file()
