"""Exact FLOP counts of small modules against their closed forms (a multiply-add is 2)."""
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from auditor.counting import count_step
from helpers import tiny_gpt2


def test_linear_forward_and_weight_only_backward():
    b, i, o = 5, 12, 7
    r = count_step(torch.nn.Linear(i, o), torch.randn(b, i))
    assert r.forward == 2 * b * i * o
    # The input needs no gradient, so the backward is the weight gradient alone: 1x.
    assert r.backward == 2 * b * i * o
    assert r.complete and not r.executed


def test_linear_with_input_gradient_has_twice_the_forward_backward():
    b, i, o = 3, 16, 9
    x = torch.randn(b, i, requires_grad=True)
    r = count_step(torch.nn.Linear(i, o, bias=False), x)
    assert (r.forward, r.backward) == (2 * b * i * o, 4 * b * i * o)


def test_stack_of_linears_first_layer_backward_is_1x_others_2x():
    b, widths = 4, [10, 20, 30, 5]
    layers = []
    for a, c in zip(widths, widths[1:]):
        layers += [torch.nn.Linear(a, c), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers)
    r = count_step(model, torch.randn(b, widths[0]))
    per_layer = [2 * b * a * c for a, c in zip(widths, widths[1:])]
    assert r.forward == sum(per_layer)
    assert r.backward == per_layer[0] + 2 * sum(per_layer[1:])
    mods = r.by_module()
    assert mods["0"] == {"forward": per_layer[0], "backward": per_layer[0], "recompute": 0}
    assert mods["2"] == {"forward": per_layer[1], "backward": 2 * per_layer[1], "recompute": 0}
    assert mods["4"] == {"forward": per_layer[2], "backward": 2 * per_layer[2], "recompute": 0}


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 0, 1), (1, 1, 2)])
def test_conv2d(stride, padding, groups):
    n, cin, cout, h, w, k = 2, 4, 6, 11, 9, 3
    conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups)
    x = torch.randn(n, cin, h, w, requires_grad=True)
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    fwd = 2 * n * cout * ho * wo * (cin // groups) * k * k
    r = count_step(conv, x)
    assert r.forward == fwd
    assert r.backward == 2 * fwd  # input gradient + weight gradient


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_transposed_conv_backward_equals_twice_forward(groups):
    n, cin, cout, h, k = 2, 4, 8, 5, 3
    conv = torch.nn.ConvTranspose2d(cin, cout, k, stride=2, groups=groups)
    x = torch.randn(n, cin, h, h, requires_grad=True)
    fwd = 2 * n * h * h * k * k * cin * (cout // groups)  # every input point meets every tap
    r = count_step(conv, x)
    assert (r.forward, r.backward) == (fwd, 2 * fwd)


def test_depthwise_conv_weight_gradient_not_inflated():
    """torch 2.13 counts a depthwise weight gradient C times over; ours is the forward's cost."""
    n, c, h, k = 2, 16, 8, 3
    conv = torch.nn.Conv2d(c, c, k, padding=1, groups=c, bias=False)
    fwd = 2 * n * c * h * h * k * k
    r = count_step(conv, torch.randn(n, c, h, h))  # input needs no gradient: weight gradient only
    assert (r.forward, r.backward) == (fwd, fwd)


def test_bmm_and_einsum():
    b, i, j, k = 3, 5, 7, 11

    class Products(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(b, j, k))

        def forward(self, x):
            return torch.bmm(x, self.w) + torch.einsum("bij,bjk->bik", x, self.w)

    r = count_step(Products(), torch.randn(b, i, j))
    assert r.forward == 2 * (2 * b * i * j * k)
    assert r.backward == 2 * (2 * b * i * j * k)  # weight gradients only
    assert set(r.by_op()) == {"aten.bmm"}


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_scaled_dot_product_attention(device):
    b, h, s, d = 2, 3, 10, 8

    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    qkv = [torch.randn(b, h, s, d, device=device, requires_grad=True) for _ in range(3)]
    r = count_step(Attention(), tuple(qkv))
    fwd = 2 * (2 * b * h * s * s * d)  # QK^T and AV over the full context
    assert r.forward == fwd
    assert r.backward == 2 * fwd
    assert r.complete
    if device == "cpu":
        # The CPU flash kernel recomputes QK^T in its backward: hardware work, kept apart.
        assert r.hardware_total - r.total == 2 * b * h * s * s * d


def test_grouped_query_attention_counts_query_heads():
    b, hq, hkv, s, d = 1, 8, 2, 6, 4
    q = torch.randn(b, hq, s, d, requires_grad=True)
    k, v = (torch.randn(b, hkv, s, d, requires_grad=True) for _ in range(2))

    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    r = count_step(Attention(), (q, k, v))
    assert r.forward == 4 * b * hq * s * s * d


def test_grouped_mm_routed_rows():
    """aten._grouped_mm: rows are tokens x k, split among experts in any proportion."""
    experts, d, f = 4, 8, 16
    offs = torch.tensor([3, 3, 10, 12], dtype=torch.int32)  # uneven, one expert empty

    class Experts(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(experts, d, f))

        def forward(self, x):
            return torch._grouped_mm(x, self.w, offs=offs)

    x = torch.randn(12, d, requires_grad=True)
    # A contiguous gradient: torch's grouped-mm backward rejects the broadcast one of a plain sum.
    r = count_step(Experts(), x, loss_fn=lambda y: (y * y).sum())
    assert r.forward == 2 * 12 * d * f
    assert r.backward == 2 * (2 * 12 * d * f)  # input gradient + per-expert weight gradients
    assert r.complete


def test_optimizer_step_is_not_training_compute():
    model = torch.nn.Linear(6, 3)
    opt = torch.optim.AdamW(model.parameters())
    before = count_step(model, torch.randn(2, 6)).total

    class WithStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x)

    assert count_step(WithStep(), torch.randn(2, 6)).total == before
    assert all(p.grad is None for p in model.parameters())  # counting leaves no gradients
    opt.zero_grad()


def test_counting_from_shapes_on_meta():
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    r = count_step(model, shapes=(16, 32))
    first, second = 2 * 16 * 32 * 64, 2 * 16 * 64 * 8
    assert (r.forward, r.backward) == (first + second, first + 2 * second)


def test_shapes_mapping_with_dtypes():
    emb = torch.nn.EmbeddingBag(50, 12, mode="sum")

    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = emb, torch.nn.Linear(12, 3)

        def forward(self, ids):
            return self.out(self.emb(ids))

    r = count_step(Bag(), shapes={"ids": ((5, 7), torch.long)})
    assert r.forward == 2 * 5 * 12 * 3


def test_lstm_two_layers_cpu_kernel():
    """nn.LSTM on the CPU runs aten.mkldnn_rnn_layer: 4 gates x (input + recurrent) matmuls a step."""
    b, t, i, h = 2, 5, 4, 6
    r = count_step(torch.nn.LSTM(i, h, batch_first=True, num_layers=2), torch.randn(b, t, i),
                   loss_fn=lambda out: out[0].sum())
    fwd = 2 * b * t * 4 * h * (i + h) + 2 * b * t * 4 * h * (h + h)
    # Backward, the gradients the model needs: both layers' weights (as much as the forward),
    # the second layer's input (the first's is data), and the recurrent state of every step
    # but the first (the initial state is zeros, needing none).
    bwd = fwd + 2 * b * t * 4 * h * h + 2 * 2 * b * (t - 1) * 4 * h * h
    assert (r.forward, r.backward) == (fwd, bwd)
    assert r.hardware_total == 3 * fwd  # the kernel computes every gradient: twice the forward
    assert r.complete


def test_bilinear():
    b, in1, in2, out = 3, 4, 5, 6
    r = count_step(torch.nn.Bilinear(in1, in2, out), (torch.randn(b, in1), torch.randn(b, in2)))
    assert r.forward == 2 * b * out * in1 * in2 and r.complete


def test_counting_leaves_gradients_and_running_stats_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    model(torch.randn(8, 4)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    stats = model[1].running_mean.clone()
    count_step(model, torch.randn(8, 4))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert torch.equal(model[1].running_mean, stats)


@pytest.mark.parametrize("reentrant, early_stop, rerun", [
    (True, True, {"a.0": 1, "a.2": 1}),
    # Non-reentrant checkpointing (Hugging Face's default) stops the rerun once every saved
    # tensor is back: a.2 saves its inputs before its matmul runs, so that matmul is not rerun.
    (False, True, {"a.0": 1}),
    (False, False, {"a.0": 1, "a.2": 1}),
])
def test_checkpoint_recomputation_is_reported_apart_under_its_own_modules(reentrant, early_stop, rerun):
    """Activation checkpointing reruns forward work inside the backward: hardware work, kept
    out of training compute, and charged to the modules that reran it (not to the module whose
    backward asked for the rerun)."""
    from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
            self.b = torch.nn.Linear(16, 16)

        def forward(self, x):
            return self.b(checkpoint(self.a, x, use_reentrant=reentrant))

    x = torch.randn(4, 16, requires_grad=True)
    with set_checkpoint_early_stop(early_stop):
        r = count_step(Model(), x)
    layer = 2 * 4 * 16 * 16
    assert (r.forward, r.backward) == (3 * layer, 6 * layer)
    assert {mod: v // layer for (phase, mod, _), v in r.records.items() if phase == "recompute"} == rerun
    assert r.recompute == sum(rerun.values()) * layer
    assert r.total == 9 * layer and r.hardware_total == r.total + r.recompute


def test_hugging_face_gradient_checkpointing_leaves_training_compute_unchanged():
    """GPT-2 with gradient checkpointing (non-reentrant): the same training FLOPs; each block's
    forward is rerun up to its last matmul (MLP c_proj saves its inputs first and stops the rerun)."""
    d, layers, vocab, s = 32, 3, 50, 16
    config = {"n_embd": d, "n_layer": layers, "n_head": 4, "vocab_size": vocab, "n_positions": s}
    ids = torch.zeros(2, s, dtype=torch.long)
    plain = count_step(tiny_gpt2(dropout=False, **config), {"input_ids": ids, "labels": ids})
    model = tiny_gpt2(dropout=False, **config)
    # non-reentrant, Hugging Face's default (the method's name before transformers 5: gradient_...)
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    checkpointed = count_step(model, {"input_ids": ids, "labels": ids})
    assert checkpointed.total == plain.total and plain.recompute == 0
    t = 2 * s
    block_until_c_proj = 2 * t * (3 * d * d + d * d + 4 * d * d) + 2 * 2 * 2 * s * s * d  # qkv, out, fc; QK^T, AV
    assert checkpointed.recompute == layers * block_until_c_proj


class _TorchFormulas(torch.utils._python_dispatch.TorchDispatchMode):
    """torch's own per-op formulas summed over every op, with no phases and no module tracking
    (FlopCounterMode's module tracker fails inside autograd.grad with leaf inputs)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils.flop_counter import flop_registry

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def _counted_and_torch(model, step):
    """Our CountingMode and torch's formulas over the same step (fresh copies of the model)."""
    import copy

    from auditor.counting.mode import CountingMode

    ours_model, torch_model = copy.deepcopy(model), copy.deepcopy(model)
    mode = CountingMode(ours_model)
    with mode:
        step(ours_model)
    with _TorchFormulas() as reference:
        step(torch_model)
    return mode.result, reference.total


def test_gradient_penalty_double_backward_is_training_compute():
    """create_graph=True: the first backward builds a graph and the second runs through it; all of
    it is training compute (torch's counter, which has no phases, gives the same total)."""
    b, d = 4, 16
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh(), torch.nn.Linear(d, d))
    x = torch.randn(b, d, requires_grad=True)

    def step(m):
        out = m(x).sum()
        (grad_x,) = torch.autograd.grad(out, x, create_graph=True)
        (out + grad_x.pow(2).sum()).backward()

    result, reference = _counted_and_torch(model, step)
    assert result.recompute == 0
    assert result.total == reference
    layer = 2 * b * d * d
    assert result.forward == 2 * layer
    # autograd.grad: the two input gradients (2). The second backward: the output's graph, weight
    # and input gradients of both layers (4); the penalty's graph, the two input-gradient
    # matmuls (g W2, then g' W1), giving W2's and W1's gradients and g''s gradient (3).
    assert result.backward == 9 * layer


def test_autograd_grad_inside_a_forward_is_not_recompute():
    """A physics-informed model takes du/dx inside its own forward: grad mode on, inside a
    backward, inside a module; still training compute, not a checkpoint's rerun."""
    b, d = 4, 8

    class Pinn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh(), torch.nn.Linear(d, 1))

        def forward(self, x):
            u = self.net(x)
            (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
            return u, du

    torch.manual_seed(0)
    x = torch.randn(b, d, requires_grad=True)

    def step(m):
        u, du = m(x)
        (u.pow(2).mean() + du.pow(2).mean()).backward()

    result, reference = _counted_and_torch(Pinn(), step)
    assert result.recompute == 0 and result.total == reference
    # du/dx runs inside Pinn's forward, but its matmuls are the layers' input gradients and are
    # charged to them: net.0 2bdd (du/dx) + 4bdd (the loss's weight and input gradients), net.2
    # likewise with d -> 1. The graph du/dx built is Pinn's own (the root, ""): the rest.
    by_module = Counter()
    for (phase, mod, _), v in result.records.items():
        by_module[phase, mod] += v
    assert by_module["backward", "net.0"] == 3 * 2 * b * d * d
    assert by_module["backward", "net.2"] == 3 * 2 * b * d
    assert set(by_module) == {("forward", "net.0"), ("forward", "net.2"), ("backward", "net.0"),
                              ("backward", "net.2"), ("backward", "")}


def test_a_hand_written_checkpoint_is_recognised_by_its_rerun_modules():
    """A checkpoint that is not torch's (its own autograd.Function): the rerun enters the block
    again inside the backward, so it is recompute, charged to the block's modules."""
    b, d = 4, 16
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.Linear(d, d))
    head = torch.nn.Linear(d, d)

    class Rerun(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            with torch.no_grad():
                return block(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                out = block(x)
            torch.autograd.backward(out, grad)
            return x.grad

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.head = block, head

        def forward(self, x):
            return self.head(Rerun.apply(x))

    r = count_step(Model(), torch.randn(b, d, requires_grad=True))
    layer = 2 * b * d * d
    assert (r.forward, r.backward) == (3 * layer, 6 * layer)
    assert {mod: v // layer for (phase, mod, _), v in r.records.items() if phase == "recompute"} == \
        {"block.0": 1, "block.2": 1}
