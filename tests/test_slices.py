"""Models that cannot run on the meta device are counted by shallow slices on the CPU (1, 2 and
3 layers, checked linear in depth, extrapolated), equal to a full CPU count of the whole model."""
import json

import pytest
import torch

from auditor.counting import slices
from auditor.counting.hf import count_hf
from helpers import invoke

# Each fails on meta for its own reason: diffllama copies a CPU scalar in backward, xlm reads
# lengths.max().item(), xlnet builds CPU tensors in its forward.
META_FAILING = {
    "diffllama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=5, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128),
    "xlm": dict(emb_dim=64, n_layers=5, n_heads=4, vocab_size=128),
    "xlnet": dict(d_model=64, n_layer=5, n_head=4, d_inner=128, vocab_size=128),
}


def full_cpu_count(config: dict, seq_len: int):
    torch.manual_seed(0)
    return count_hf(config, seq_len=seq_len, device="cpu", repeated_blocks=False)


@pytest.mark.parametrize("model_type", sorted(META_FAILING))
def test_slices_equal_a_full_cpu_count(model_type):
    config = {"model_type": model_type, **META_FAILING[model_type]}
    with pytest.raises(Exception, match="on the meta device"):
        count_hf(config, seq_len=32)
    step, half_total, said = slices.count_hf_by_slices(config, 32)
    full = full_cpu_count(config, 32)
    assert step.total == full.total and step.forward == full.forward and step.by_op() == full.by_op()
    assert half_total == full_cpu_count(config, 16).total
    assert "slices of it with 1, 2 and 3 layers were counted on the CPU" in said[0]


def test_preflight_counts_a_meta_failing_model_by_slices(tmp_path):
    config = {"model_type": "xlm", **META_FAILING["xlm"]}
    (tmp_path / "xlm.json").write_text(json.dumps(config))
    run = tmp_path / "run.yaml"
    run.write_text("run: xlm\nmodel: {hf_config: xlm.json}\ndata: {tokens: 3200, seq_len: 32}\n")
    result = invoke("preflight", run, "--format", "json")
    assert result.exit_code == 0, result.output
    counted = next(e for e in json.loads(result.stdout)["estimates"] if e["method"] == "counted")
    assert counted["flops"] == 100 * full_cpu_count(config, 32).total           # 3,200 tokens / 32 a sequence
    assert any("extrapolated to n_layers 5" in a for a in counted["assumptions"])


def test_per_layer_settings_are_not_sliced():
    config = {"model_type": "diffllama", **META_FAILING["diffllama"],
              "layer_types": ["full_attention"] * 5}
    with pytest.raises(slices.SliceRefused, match="sets layer_types per layer"):
        slices.count_hf_by_slices(config, 32)


def test_a_slice_too_costly_for_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(slices, "MAX_SLICE_FLOPS", 10 ** 6)
    config = {"model_type": "xlm", **META_FAILING["xlm"]}
    with pytest.raises(slices.SliceRefused, match="FLOPs of real arithmetic, over the 1.0e6 "):
        slices.count_hf_by_slices(config, 32)


def test_a_count_that_is_not_linear_in_depth_is_refused():
    """A stand-in model whose cost grows with the square of its depth."""
    from collections import Counter

    from auditor.counting.result import StepCount

    def count(config, seq_len):
        n = config["num_hidden_layers"]
        return StepCount(Counter({("forward", f"layers.{n - 1}", "aten.mm"): n * n}), Counter(), Counter(), [], None)

    with pytest.raises(slices.SliceRefused, match="not linear in num_hidden_layers"):
        slices.count_by_slices({"model_type": "x", "num_hidden_layers": 8}, 16, count)
