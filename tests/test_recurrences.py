"""Elementwise time loops run as one step on meta: exactly the count of the loop itself."""
import pytest
import torch

from auditor.counting.hf import count_hf

RWKV = {"model_type": "rwkv", "hidden_size": 64, "num_hidden_layers": 3, "attention_hidden_size": 64,
        "intermediate_size": 128, "vocab_size": 128}


@pytest.mark.parametrize("seq_len", [1, 2, 64])
def test_rwkv_on_meta_equals_its_loop_on_the_cpu_record_by_record(seq_len):
    """The CPU runs transformers' own loop over time; meta runs the stand-in."""
    from transformers.models.rwkv import modeling_rwkv

    original = modeling_rwkv.rwkv_linear_attention_cpu
    meta = count_hf(RWKV, seq_len=seq_len, repeated_blocks=False)
    assert modeling_rwkv.rwkv_linear_attention_cpu is original               # put back
    assert any("rwkv_linear_attention_cpu: a loop over time" in a for a in meta.assumptions)
    torch.manual_seed(0)
    cpu = count_hf(RWKV, seq_len=seq_len, device="cpu", repeated_blocks=False)
    assert not any("a loop over time" in a for a in cpu.assumptions)
    assert meta.records == cpu.records and meta.executed == cpu.executed and meta.total == cpu.total > 0
    # with the repeated-block shortcut too (the stand-in under the shortened lists)
    assert count_hf(RWKV, seq_len=seq_len).total == cpu.total
