"""Never silent: compute-class ops with no formula are reported and mark the count incomplete."""
import torch

from auditor.counting import count_step
from auditor.counting.classify import is_compute_class


@torch.library.custom_op("auditor_test::mystery_mm", mutates_args=())
def mystery_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


@mystery_mm.register_fake
def _(a, b):
    return a.new_empty(a.shape[0], b.shape[1])


@torch.library.custom_op("auditor_test::mystery_scale", mutates_args=())
def mystery_scale(a: torch.Tensor) -> torch.Tensor:
    return a * 2


@mystery_scale.register_fake
def _(a):
    return torch.empty_like(a)


class Mystery(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 5))
        self.lin = torch.nn.Linear(5, 5)

    def forward(self, x):
        return self.lin(mystery_scale(mystery_mm(x, self.w)))


def test_unknown_matmul_is_reported_not_dropped():
    r = count_step(Mystery(), torch.randn(3, 4), backward=False)
    assert dict(r.uncovered) == {"auditor_test.mystery_mm": 1}
    assert not r.complete
    assert r.forward == 2 * 3 * 5 * 5  # the Linear is still counted
    assert "auditor_test.mystery_mm" in r.to_dict()["uncovered_ops"]


def test_uncovered_on_meta_too():
    with torch.device("meta"):
        model = Mystery()
    r = count_step(model, torch.randn(3, 4, device="meta"), backward=False)
    assert set(r.uncovered) == {"auditor_test.mystery_mm"}


def test_classification():
    compute = ["aten._grouped_mm", "aten.mm", "aten.convolution", "aten._scaled_dot_product_flash_attention_for_cpu",
               "mamba_ssm::selective_scan_fwd", "causal_conv1d.causal_conv1d_fwd", "aten._weight_int4pack_mm",
               "aten.slow_conv_transpose2d", "aten.conv_depthwise2d", "flash_attn::_flash_attn_forward"]
    elementwise = ["aten.add", "aten.mul", "aten.cummax", "aten.cumsum", "aten.softmax", "aten.native_layer_norm",
                   "aten.embedding", "aten._convert_weight_to_int4pack", "aten.index_add", "aten.mse_loss"]
    assert [n for n in compute if not is_compute_class(n)] == []
    assert [n for n in elementwise if is_compute_class(n)] == []
