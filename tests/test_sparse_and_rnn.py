"""Operands shape formulas do not model (sparse matrices), and recurrent layers counted the same
on the CPU (oneDNN's fused LSTM kernel) as on the meta device (decomposed into matmuls)."""
import itertools

import pytest
import torch

from auditor.counting import count_step
from auditor.counting.formulas.sparse import stored_elements
from auditor.counting.step import CountingError

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse invariant checks"),
              pytest.mark.filterwarnings("ignore:Sparse CSR tensor support")]

# --- sparse operands -----------------------------------------------------------------------------

N, F_IN, F = 1000, 16, 8


def adjacency(layout: torch.layout = torch.sparse_coo) -> torch.Tensor:
    """A 1000 x 1000 graph of 4,989 edges (5,000 drawn, duplicates merged)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.sparse_coo_tensor(torch.randint(0, N, (2, 5000), generator=gen),
                                torch.rand(5000, generator=gen), (N, N)).coalesce()
    return a if layout is torch.sparse_coo else a.to_sparse_csr()


class GCNLayer(torch.nn.Module):
    """A graph convolution: A (X W), with A sparse."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = a
        self.lin = torch.nn.Linear(F_IN, F, bias=False)

    def forward(self, x):
        return torch.sparse.mm(self.a, self.lin(x))


def test_the_adjacency_has_the_stated_nonzeros():
    assert adjacency()._nnz() == 4989 and stored_elements(adjacency(torch.sparse_csr)) == 4989


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr], ids=["coo", "csr"])
def test_gcn_layer_counts_from_the_nonzeros(layout):
    a = adjacency(layout)
    nnz = 4989
    r = count_step(GCNLayer(a), torch.randn(N, F_IN))
    # Forward: X W, a dense (N, F_IN) x (F_IN, F) product, 2 N F_IN F; then A (XW): each stored
    # element of A meets a row of F, 2 nnz F. Backward: grad (N, F) to XW through A^T, again 2 nnz F
    # (A^T stores as many); then W's gradient X^T grad, 2 N F_IN F (X is data: no gradient).
    dense, sparse = 2 * N * F_IN * F, 2 * nnz * F
    assert (r.forward, r.backward) == (dense + sparse, dense + sparse)
    assert r.complete and r.executed == {}
    assert r.by_op()["aten._sparse_addmm"] == {"forward": sparse, "backward": 0, "recompute": 0}


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr], ids=["coo", "csr"])
def test_learned_edge_weights(layout):
    """A's values require grad: their gradient is (grad (XW)^T) at A's stored positions, 2 nnz F.
    CSR computes just that (sparse_sampled_addmm); COO computes the dense (N, N) product and masks
    it: the model's share is the same, the rest is hardware work."""
    a = adjacency(layout).requires_grad_(True)
    nnz = 4989
    r = count_step(GCNLayer(a), torch.randn(N, F_IN))
    dense, sparse = 2 * N * F_IN * F, 2 * nnz * F
    assert (r.forward, r.backward) == (dense + sparse, dense + 2 * sparse)
    hardware = 2 * N * N * F - sparse if layout is torch.sparse_coo else 0
    assert sum(r.executed.values()) == hardware and r.complete


@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr], ids=["coo", "csr"])
def test_sparse_products_of_every_spelling(layout):
    a = adjacency(layout)
    nnz, x = 4989, torch.randn(N, F, requires_grad=True)

    def count(fn):
        class M(torch.nn.Module):
            def forward(self, x):
                return fn(x)
        r = count_step(M(), x)
        assert r.complete
        return r.forward, r.backward

    # A x and x^T A: each stored element meets F columns (rows); the backward, A^T grad or
    # grad A^T, as many again (x's gradient; A needs none).
    assert count(lambda x: a @ x) == (2 * nnz * F, 2 * nnz * F)
    assert count(lambda x: torch.mm(x.t(), a)) == (2 * nnz * F, 2 * nnz * F)
    assert count(lambda x: torch.sparse.addmm(torch.ones(N, F), a, x)) == (2 * nnz * F, 2 * nnz * F)
    # A v: one multiply-add per stored element; backward A^T g, the same.
    assert count(lambda x: torch.mv(a, x[:, 0])) == (2 * nnz, 2 * nnz)


def test_sparse_times_sparse_is_reported_not_counted_as_dense():
    """Work depends on where the two patterns meet: no shape or nnz formula is exact, so the op is
    reported (the count stays a lower bound) instead of 2 N^3."""
    a = adjacency()

    def square_then_dense(product):
        class M(torch.nn.Module):
            def forward(self, x):
                return product(a, a).to_dense() @ x
        return count_step(M(), torch.randn(N, F), backward=False)

    for product, reported in ((torch.mm, "aten.mm (sparse_coo operand)"),
                              (torch.sparse.mm, "aten._sparse_sparse_matmul")):
        r = square_then_dense(product)
        assert dict(r.uncovered) == {reported: 1}
        assert r.forward == 2 * N * N * F and not r.complete   # the dense product after it, alone


_lib = torch.library.Library("sparsetest", "DEF")
_lib.define("product(Tensor a, Tensor b) -> Tensor")
_lib.impl("product", lambda a, b: torch.mm(a, b), "CompositeExplicitAutograd")


def test_a_dense_formula_never_sees_a_sparse_operand():
    """A formula registered with torch for a user's op is a shape formula: given a sparse operand
    it would count every zero, so the op is reported instead."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    packet = torch.ops.sparsetest.product
    register_flop_formula(packet)(lambda a, b, *args, out_shape=None, **kw: 2 * a[0] * a[1] * b[1])
    try:
        class M(torch.nn.Module):
            def forward(self, x):
                return packet(adjacency(), x)
        r = count_step(M(), torch.randn(N, F), backward=False)
        assert (r.forward, dict(r.uncovered)) == (0, {"sparsetest.product (sparse_coo operand)": 1})
    finally:
        flop_registry.pop(packet, None)


def test_sparse_on_meta():
    """On meta a sparse tensor keeps no stored elements (``.to("meta")`` drops them) and torch 2.13
    has no meta kernel for sparse products: the count fails, naming the model and the op."""
    on_meta = adjacency().to("meta")
    assert stored_elements(on_meta) is None
    with torch.device("meta"):
        layer = GCNLayer(on_meta)
    with pytest.raises(CountingError, match=r"^GCNLayer cannot run on the meta device: .*SparseMeta"):
        count_step(layer, torch.randn(N, F_IN, device="meta"))


# --- recurrent layers: the CPU's fused kernel and the meta device's matmuls agree --------------

T, B, I, H = 5, 3, 4, 6  # noqa: E741  (the papers' names: time, batch, input, hidden)
GATES = {torch.nn.LSTM: 4, torch.nn.GRU: 3, torch.nn.RNN: 1}


def rnn_closed_form(cls, layers: int, directions: int, input_grad: bool, h0_grad: bool = False,
                    frozen_first_layer: bool = False) -> tuple[int, int]:
    """Forward and backward of a stacked RNN, from its matmuls.

    Per layer and direction, with G gates, input width I_l (I, then H x directions) and
    R = T x B rows, the forward is the input and recurrent matmuls, 2 R G H (I_l + H). The
    backward needs: the weight gradients, 2 R G H I_l and 2 R G H H, for weights that require grad;
    the input gradient, 2 R G H I_l, where the input requires grad (always, past the first
    layer); the recurrent gradient to the state of every step but the first, 2 (T - 1) B G H H,
    and 2 B G H H more where the initial state requires grad. Biases add elementwise work only.
    """
    g = GATES[cls]
    rows = T * B
    forward = backward = 0
    for layer in range(layers):
        width = I if layer == 0 else H * directions
        weights = not (frozen_first_layer and layer == 0)
        for _ in range(directions):
            forward += 2 * rows * g * H * (width + H)
            backward += weights * 2 * rows * g * H * (width + H)
            backward += (layer > 0 or input_grad) * 2 * rows * g * H * width
            backward += 2 * (T - 1) * B * g * H * H + h0_grad * 2 * B * g * H * H
    return forward, backward


class LearnedState(torch.nn.Module):
    """An RNN whose initial state is a parameter (so it requires grad), built on any device."""

    def __init__(self, cls, layers: int):
        super().__init__()
        self.rnn = cls(I, H, num_layers=layers, batch_first=True)
        self.h0 = torch.nn.Parameter(torch.zeros(layers, B, H))
        self.c0 = torch.nn.Parameter(torch.zeros(layers, B, H)) if cls is torch.nn.LSTM else None

    def forward(self, x):
        state = self.h0 if self.c0 is None else (self.h0, self.c0)
        return self.rnn(x, state)[0]


def count_on(device: str, build, input_grad: bool):
    with torch.device(device):
        model = build()
    x = torch.randn(B, T, I, device=device, requires_grad=input_grad)
    return count_step(model, x, loss_fn=lambda out: (out[0] if isinstance(out, tuple) else out).float().sum())


@pytest.mark.parametrize("cls, layers, bidirectional, input_grad",
                         list(itertools.product(GATES, (1, 2), (False, True), (False, True))))
def test_rnn_counts_the_same_on_cpu_and_meta(cls, layers, bidirectional, input_grad):
    expected = rnn_closed_form(cls, layers, 2 if bidirectional else 1, input_grad)

    def build():
        return cls(I, H, num_layers=layers, batch_first=True, bidirectional=bidirectional)

    for device in ("cpu", "meta"):
        r = count_on(device, build, input_grad)
        assert (r.forward, r.backward) == expected, device
        assert r.complete


@pytest.mark.parametrize("cls", list(GATES))
def test_rnn_learned_initial_state_and_frozen_layer(cls):
    def learned():
        return LearnedState(cls, 2)

    def frozen():
        model = cls(I, H, num_layers=2, batch_first=True)
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(model, name).requires_grad_(False)
        return model

    for device in ("cpu", "meta"):
        r = count_on(device, learned, input_grad=False)
        assert (r.forward, r.backward) == rnn_closed_form(cls, 2, 1, False, h0_grad=True), device
        r = count_on(device, frozen, input_grad=True)
        assert (r.forward, r.backward) == rnn_closed_form(cls, 2, 1, True, frozen_first_layer=True), device


def test_cpu_lstm_kernel_work_beyond_the_model_is_hardware_work():
    """oneDNN's LSTM backward computes every gradient, twice the forward; what the model does not
    need (here the input's gradient and the initial state's) is kept as hardware work."""
    r = count_on("cpu", lambda: torch.nn.LSTM(I, H, batch_first=True), input_grad=False)
    forward, backward = rnn_closed_form(torch.nn.LSTM, 1, 1, False)
    assert r.hardware_total == forward + 2 * forward
    assert sum(r.executed.values()) == 2 * forward - backward == 2 * T * B * 4 * H * I + 2 * B * 4 * H * H
