"""Optimizer update FLOPs: n trainable elements x operations per element, as optimizer.py states.

Per element: SGD 2, + weight decay 2, + momentum 2 (3 with dampening), + nesterov 2;
Adam/AdamW core 13 (moments 3 + 4, denominator 3, update 3), AdamW decay + 1, Adam L2 decay + 2.
"""
import pytest
import torch
from torch import nn

from auditor.counting import count_step, optimizer_flops
from auditor.counting.mode import CountingMode

IN, HID, OUT, B = 10, 7, 3, 4
N1 = IN * HID + HID   # first layer: weight + bias
N2 = HID * OUT + OUT  # second layer
N = N1 + N2


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HID), nn.ReLU(), nn.Linear(HID, OUT))


def test_parameter_count_is_what_the_closed_forms_assume():
    assert sum(p.numel() for p in mlp().parameters()) == N == 10 * 7 + 7 + 7 * 3 + 3


@pytest.mark.parametrize("kwargs, per_element", [
    ({}, 2),                                                    # p -= lr * g
    ({"weight_decay": 1e-4}, 2 + 2),                            # g += wd * p
    ({"momentum": 0.9}, 2 + 2),                                 # b = mu * b + g
    ({"momentum": 0.9, "dampening": 0.1}, 2 + 3),               # b = mu * b + (1 - d) * g
    ({"momentum": 0.9, "nesterov": True}, 2 + 2 + 2),           # g = g + mu * b
    ({"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}, 2 + 2 + 2 + 2),
])
def test_sgd(kwargs, per_element):
    opt = torch.optim.SGD(mlp().parameters(), lr=0.1, **kwargs)
    assert optimizer_flops(opt) == N * per_element


@pytest.mark.parametrize("cls, kwargs, per_element", [
    (torch.optim.Adam, {}, 13),
    (torch.optim.Adam, {"weight_decay": 0.0}, 13),
    (torch.optim.Adam, {"weight_decay": 0.1}, 13 + 2),                                   # L2: g += wd * p
    (torch.optim.Adam, {"weight_decay": 0.1, "decoupled_weight_decay": True}, 13 + 1),   # as AdamW
    (torch.optim.AdamW, {}, 13 + 1),                                                     # default wd 0.01
    (torch.optim.AdamW, {"weight_decay": 0.1}, 13 + 1),                                  # p *= 1 - lr * wd
    (torch.optim.AdamW, {"weight_decay": 0.0}, 13),
])
def test_adam_and_adamw(cls, kwargs, per_element):
    opt = cls(mlp().parameters(), lr=1e-3, **kwargs)
    assert optimizer_flops(opt) == N * per_element


def test_param_groups_each_with_its_own_settings():
    model = mlp()
    sgd = torch.optim.SGD([
        {"params": model[0].parameters()},                                   # plain: 2
        {"params": model[2].parameters(), "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},  # 8
    ], lr=0.1)
    assert optimizer_flops(sgd) == N1 * 2 + N2 * 8
    adamw = torch.optim.AdamW([
        {"params": [model[0].weight, model[2].weight], "weight_decay": 0.1},   # 14
        {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0},       # 13: no decay on biases
    ], lr=1e-3)
    assert optimizer_flops(adamw) == (IN * HID + HID * OUT) * 14 + (HID + OUT) * 13


def test_frozen_parameters_are_excluded():
    model = mlp()
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert optimizer_flops(torch.optim.SGD(model.parameters(), lr=0.1)) == N2 * 2
    assert optimizer_flops(torch.optim.Adam(model.parameters(), lr=1e-3)) == N2 * 13
    model[0].weight.requires_grad_(True)
    assert optimizer_flops(torch.optim.AdamW(model.parameters(), lr=1e-3)) == (IN * HID + N2) * 14


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="rmsprop"):
        optimizer_flops(torch.optim.RMSprop(mlp().parameters(), lr=1e-3))


# ---------------------------------------------------------------- not part of training compute

# Forward 2B(IN*HID + HID*OUT); backward: the first layer's weight gradient only (the input does
# not require grad), the second layer's weight and input gradients.
FORWARD = 2 * B * (IN * HID + HID * OUT)
BACKWARD = 2 * B * IN * HID + 2 * (2 * B * HID * OUT)


def _step_inputs():
    return torch.randn(B, IN, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=0.1),
    lambda ps: torch.optim.AdamW(ps, lr=1e-3),
])
def test_count_step_total_excludes_optimizer(make):
    model, x = mlp(), _step_inputs()
    bare = count_step(model, x)
    assert (bare.forward, bare.backward) == (FORWARD, BACKWARD)

    opt = make(model.parameters())
    model(x).sum().backward()
    opt.step()  # the optimizer now holds state (momentum, moments)
    with_opt = count_step(model, x)
    assert (with_opt.forward, with_opt.backward, with_opt.total) == (FORWARD, BACKWARD, FORWARD + BACKWARD)
    assert optimizer_flops(opt) > 0 and with_opt.total == bare.total

    # Even an optimizer step run inside the counted region adds nothing: its ops are elementwise.
    mode = CountingMode(model)
    with mode:
        model(x).sum().backward()
        opt.step()
    assert mode.result.total == FORWARD + BACKWARD
    assert not mode.result.uncovered


def test_count_step_leaves_gradients_as_they_were():
    model, x = mlp(), _step_inputs()
    model(x).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    count_step(model, x)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))
