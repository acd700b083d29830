"""The formula registry: torch's registry is live, ours replace it only on purpose, duplicates
are refused, and the list of replacements in docs/counting.md is the registry's."""
import ast
import re
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import register_flop_formula

from auditor.counting import REGISTRY, count_step
from auditor.counting.formulas import (
    OURS,
    REPLACES_TORCH,
    TORCH_REGISTRY,
    formula,
    op_name,
    shadowed_torch_formulas,
)

ROOT = Path(__file__).resolve().parent.parent
aten = torch.ops.aten

# Custom ops, defined here with torch.library (after auditor was imported, above). Their names hold
# no matmul word, so with no formula they count nothing and are not reported: only a formula can
# make them count.


def define_product(name: str):
    """A torch.library op ``name`` computing a @ b, with its fake (meta) kernel."""
    @torch.library.custom_op(name, mutates_args=())
    def op(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    @op.register_fake
    def _(a, b):
        return a.new_empty(a.shape[0], b.shape[1])

    return op


product = define_product("regtest::product")
other_product = define_product("regtest::other_product")


def _product_backward(ctx, grad):
    a, b = ctx.saved_tensors
    return product(grad, b.t().contiguous()), product(a.t().contiguous(), grad)


def _save_operands(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


product.register_autograd(_product_backward, setup_context=_save_operands)


def product_count(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


class Products(torch.nn.Module):
    def __init__(self, k: int, n: int, op):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(k, n))
        self.op = op

    def forward(self, x):
        return self.op(x, self.w)


@pytest.fixture
def torch_formula_for():
    """Register formulas with torch's own register_flop_formula, removed again after the test."""
    added = []

    def register(packet, fn=product_count):
        register_flop_formula(packet)(fn)
        added.append(packet)

    yield register
    for packet in added:
        TORCH_REGISTRY.pop(packet, None)


def test_a_formula_registered_with_torch_after_import_is_used(torch_formula_for):
    m, k, n = 3, 4, 5
    x = torch.randn(m, k, requires_grad=True)
    before = count_step(Products(k, n, product), x)
    assert before.total == 0 and before.complete          # no formula: invisible, as documented

    torch_formula_for(torch.ops.regtest.product)           # now, long after auditor was imported
    after = count_step(Products(k, n, product), x)
    # forward x (m, k) @ w (k, n): 2mkn. Backward: grad (m, n) @ w^T (n, k) for x, and
    # x^T (k, m) @ grad (m, n) for w, each 2mkn.
    assert (after.forward, after.backward) == (2 * m * k * n, 2 * 2 * m * k * n)
    assert after.by_op() == {"regtest.product": {"forward": 2 * m * k * n, "backward": 4 * m * k * n,
                                                 "recompute": 0}}
    assert REGISTRY[torch.ops.regtest.product] is TORCH_REGISTRY[torch.ops.regtest.product]


def test_the_registry_view_is_ours_over_torchs():
    assert REGISTRY[aten.mm] is TORCH_REGISTRY[aten.mm]                      # torch's, not replaced
    assert REGISTRY[aten.convolution_backward] is OURS[aten.convolution_backward]  # replaced on purpose
    assert REGISTRY[aten._grouped_mm] is OURS[aten._grouped_mm]              # torch has none
    assert aten.mm in REGISTRY and aten.add not in REGISTRY


def test_a_second_formula_of_ours_is_refused_unless_it_replaces_the_first():
    packet = torch.ops.regtest.other_product
    formula(packet)(product_count)
    try:
        with pytest.raises(ValueError, match="regtest.other_product: auditor already has a FLOP formula"):
            formula(packet)(lambda *a, out_shape=None, **k: 0)

        def doubled(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
            return 2 * product_count(a_shape, b_shape)

        formula(packet, replaces_ours=True)(doubled)
        r = count_step(Products(4, 5, other_product), torch.randn(3, 4), backward=False)
        assert r.forward == 2 * (2 * 3 * 4 * 5)
    finally:
        OURS.pop(packet, None)


def test_replacing_torchs_formula_needs_a_reason():
    with pytest.raises(ValueError, match="aten.mm: torch already has a FLOP formula; pass replaces_torch="):
        formula(aten.mm)(product_count)
    assert REGISTRY[aten.mm] is TORCH_REGISTRY[aten.mm]


def test_a_torch_formula_hidden_by_ours_is_said(torch_formula_for):
    packet = torch.ops.regtest.other_product
    formula(packet)(product_count)
    try:
        torch_formula_for(packet, lambda *a, out_shape=None, **k: 1)   # torch accepts: it has none
        r = count_step(Products(4, 5, other_product), torch.randn(3, 4), backward=False)
        assert r.forward == 2 * 3 * 4 * 5                               # ours, as documented
        assert any(a.startswith("regtest.other_product: a FLOP formula registered with torch")
                   for a in r.assumptions)
    finally:
        OURS.pop(packet, None)


def _documented_replacements() -> set[str]:
    text = (ROOT / "docs" / "counting.md").read_text()
    section = text.split("### Formulas that replace torch's", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([\w.]+)` \|", section, flags=re.M))


def test_docs_list_every_formula_that_replaces_torchs():
    declared = {op_name(p) for p in REPLACES_TORCH if not isinstance(p, str)}
    assert declared == _documented_replacements()
    assert all(p in TORCH_REGISTRY for p in REPLACES_TORCH)   # each reason is true of this torch
    assert shadowed_torch_formulas() == []                    # and nothing else is replaced


def test_family_modules_import_only_the_registry():
    """No import cycle: the family modules of auditor/counting/formulas/ import the registry, never
    the package or each other."""
    folder = ROOT / "auditor" / "counting" / "formulas"
    for path in folder.glob("*.py"):
        if path.name in ("__init__.py", "registry.py"):
            continue
        siblings = {node.module for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("auditor.counting")}
        assert siblings == {"auditor.counting.formulas.registry"}, path.name
