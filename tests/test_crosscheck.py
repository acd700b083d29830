"""fvcore cross-check: ours forward == 2 x fvcore's multiply-adds where both count an op.

Every expected number is a closed form of the layer shapes (a multiply-add is 2 for us, 1 for
fvcore), never a number copied from a run.
"""
import json

import pytest
import torch
from torch import nn

from auditor.counting.crosscheck import CrossCheck, fvcore_crosscheck
from helpers import tiny_gpt2

transformers = pytest.importorskip("transformers")

B = 4


def linear_macs(batch: int, fan_in: int, fan_out: int) -> int:
    return batch * fan_in * fan_out


def conv2d_macs(n: int, c_in: int, c_out: int, k: int, h_out: int, w_out: int) -> int:
    return n * c_out * h_out * w_out * c_in * k * k


def by_where(check: CrossCheck) -> dict[tuple[str, str], object]:
    return {(d.scope, d.where): d for d in check.differences}


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def test_mlp_agrees_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    check = fvcore_crosscheck(model, torch.randn(B, 16))
    macs = linear_macs(B, 16, 32) + linear_macs(B, 32, 8)
    assert check.fvcore_macs == check.fvcore_compared_macs == macs
    assert check.ours_forward == 2 * macs
    assert check.agrees and check.differences == []
    assert check.fvcore_unsupported == {} and check.ours_uncovered == {}


def test_cnn_agrees_on_conv_and_linear_and_lists_what_only_fvcore_counts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    check = fvcore_crosscheck(model, torch.randn(2, 3, 8, 8))
    conv = conv2d_macs(2, 3, 8, 3, 8, 8)
    fc = linear_macs(2, 128, 10)
    act = 2 * 8 * 8 * 8  # elements of the conv output
    assert check.ours_forward == 2 * (conv + fc)
    assert check.fvcore_compared_macs == conv + fc
    # fvcore also counts batch norm in training mode (5 per element, affine) and the pooling (1 per input element).
    assert check.fvcore_macs == conv + fc + 5 * act + act
    assert check.agrees
    rows = by_where(check)
    assert set(rows) == {("op", "batch_norm"), ("op", "adaptive_avg_pool2d")}
    assert (rows["op", "batch_norm"].ours, rows["op", "batch_norm"].fvcore_x2) == (0, 2 * 5 * act)
    assert (rows["op", "adaptive_avg_pool2d"].ours, rows["op", "adaptive_avg_pool2d"].fvcore_x2) == (0, 2 * act)
    assert all(d.kind == "convention" for d in check.differences)


# ---------------------------------------------------------------- tiny GPT-2

L, D, H, V, T, BATCH = 2, 64, 4, 100, 16, 2


def gpt2(attn: str) -> nn.Module:
    return tiny_gpt2(n_layer=L, n_embd=D, n_head=H, vocab_size=V, n_positions=32, bos_token_id=0, eos_token_id=0,
                     attn_implementation=attn)


def gpt2_inputs() -> dict:
    return {"input_ids": torch.randint(0, V, (BATCH, T), generator=torch.Generator().manual_seed(0))}


N = BATCH * T
PROJ_MACS = N * D * 3 * D + N * D * D + N * D * 4 * D + N * 4 * D * D  # c_attn, c_proj, c_fc, mlp c_proj
ATTN_MACS = 2 * BATCH * T * T * D  # QK^T and AV over all heads: B x H x T x T x (D / H), twice
HEAD_MACS = N * D * V
LN_FVCORE = (2 * L + 1) * 5 * N * D  # fvcore: 5 per element of each affine layer norm


@pytest.mark.parametrize("repeated_blocks", [True, False])
def test_gpt2_eager_attention_agrees_exactly(repeated_blocks):
    check = fvcore_crosscheck(gpt2("eager"), gpt2_inputs(), repeated_blocks=repeated_blocks)
    macs = L * (PROJ_MACS + ATTN_MACS) + HEAD_MACS
    assert check.ours_forward == 2 * macs
    assert check.fvcore_compared_macs == macs
    assert check.fvcore_macs == macs + LN_FVCORE
    assert check.agrees
    assert [(d.scope, d.where, d.ours, d.fvcore_x2, d.kind) for d in check.differences] == [
        ("op", "layer_norm", 0, 2 * LN_FVCORE, "convention")]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_gpt2_sdpa_attention_is_listed_not_hidden(mode):
    """fvcore has no handler for aten::scaled_dot_product_attention: ours counts it, fvcore does not."""
    model = gpt2("sdpa")
    getattr(model, mode)()
    check = fvcore_crosscheck(model, gpt2_inputs())
    assert check.ours_forward == 2 * (L * (PROJ_MACS + ATTN_MACS) + HEAD_MACS)
    assert check.fvcore_compared_macs == L * PROJ_MACS + HEAD_MACS
    assert not check.agrees
    assert check.fvcore_unsupported["aten::scaled_dot_product_attention"] == L
    rows = by_where(check)
    for layer in range(L):
        row = rows["module", f"transformer.h.{layer}.attn"]
        assert (row.ours, row.fvcore_x2, row.kind) == (2 * ATTN_MACS, 0, "fvcore_unsupported")
        assert "scaled_dot_product_attention" in row.note
    # eval: the CPU flash kernel, an attention op; train (dropout): the math path, two bmm.
    family = "attention" if mode == "eval" else "matmul"
    row = rows["op", family]
    assert row.kind == "fvcore_unsupported"
    assert row.ours - row.fvcore_x2 == L * 2 * ATTN_MACS
    assert {d.kind for d in check.differences} == {"fvcore_unsupported", "convention"}


# ---------------------------------------------------------------- fvcore's own limits


def test_baddbmm_has_no_fvcore_handler():
    check = fvcore_crosscheck(Lambda(torch.baddbmm), (torch.randn(2, 3, 5), torch.randn(2, 3, 4), torch.randn(2, 4, 5)))
    assert check.ours_forward == 2 * 2 * 3 * 4 * 5
    assert check.fvcore_macs == 0
    assert check.fvcore_unsupported == {"aten::baddbmm": 1}
    assert by_where(check)["module", ""].kind == "fvcore_unsupported"


def test_broadcast_matmul_fvcore_formula_is_noted():
    """fvcore counts prod(a.shape) x b.shape[-1] and misses the batch that b brings."""
    check = fvcore_crosscheck(Lambda(torch.matmul), (torch.randn(3, 4), torch.randn(6, 4, 5)))
    assert check.ours_forward == 2 * 6 * 3 * 4 * 5
    assert check.fvcore_macs == 3 * 4 * 5
    row = by_where(check)["module", ""]
    assert (row.ours, row.fvcore_x2, row.kind) == (2 * 6 * 3 * 4 * 5, 2 * 3 * 4 * 5, "fvcore_formula")
    assert f"exactly {6 * 3 * 4 * 5}" in row.note
    assert not check.agrees


def test_matrix_vector_fvcore_handler_failure_is_noted():
    check = fvcore_crosscheck(Lambda(torch.matmul), (torch.randn(3, 4), torch.randn(4)))
    assert check.ours_forward == 2 * 3 * 4
    assert check.fvcore_macs == 0
    assert by_where(check)["module", ""].kind == "fvcore_formula"


def test_einsum_contraction_agrees_and_outer_product_is_noted():
    check = fvcore_crosscheck(Lambda(lambda a, b: torch.einsum("bij,bjk->bik", a, b)),
                              (torch.randn(2, 3, 4), torch.randn(2, 4, 5)))
    assert check.ours_forward == 2 * check.fvcore_macs == 2 * 2 * 3 * 4 * 5
    assert check.agrees
    outer = fvcore_crosscheck(Lambda(lambda a, b: torch.einsum("i,j->ij", a, b)), (torch.randn(3), torch.randn(5)))
    assert outer.ours_forward == 0  # a product with no sum: elementwise in our convention
    assert by_where(outer)["module", ""].kind == "fvcore_formula"


def test_compute_neither_side_counts_is_flagged():
    """nn.Bilinear runs aten._trilinear: fvcore has no handler, and ours must not pass it silently."""
    check = fvcore_crosscheck(nn.Bilinear(3, 4, 5), (torch.randn(2, 3), torch.randn(2, 4)))
    assert check.fvcore_unsupported == {"aten::bilinear": 1}
    assert not check.agrees
    row = by_where(check)["module", ""]
    assert row.kind in ("uncounted", "fvcore_unsupported")


def test_engine_counts_bilinear():
    check = fvcore_crosscheck(nn.Bilinear(3, 4, 5), (torch.randn(2, 3), torch.randn(2, 4)))
    assert check.ours_forward == 2 * 2 * 3 * 4 * 5 and not check.ours_uncovered


def test_engine_counts_lstm():
    b, t, i, h = 2, 5, 4, 6
    check = fvcore_crosscheck(nn.LSTM(i, h, batch_first=True), (torch.randn(b, t, i),))
    assert check.ours_forward == 2 * b * t * 4 * h * (i + h) and not check.ours_uncovered


# ---------------------------------------------------------------- interface


def test_mapping_inputs_with_non_tensor_values_and_to_dict():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 3)

        def forward(self, x, scale=1.0):
            return {"out": self.fc(x) * scale}

    check = fvcore_crosscheck(Model(), {"x": torch.randn(B, 8), "scale": 2.0})
    assert check.ours_forward == 2 * linear_macs(B, 8, 3) and check.agrees
    data = json.loads(json.dumps(check.to_dict()))
    assert data["ours_forward"] == 2 * linear_macs(B, 8, 3)
    assert data["fvcore_macs"] == linear_macs(B, 8, 3)
    assert set(data) >= {"agrees", "differences", "fvcore_unsupported", "fvcore_compared_macs"}


def test_meta_model_is_refused():
    with torch.device("meta"):
        model = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="real weights"):
        fvcore_crosscheck(model, torch.randn(2, 4))
