"""Regression tests for bugs of auditor/tracking.py found while building the framework
integrations (watch() leaving the optimizer unset, so every backward ended a step)."""
import torch

from auditor.tracking import ComputeAudit


def _mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def _loop(model, opt):
    for i in range(4):                      # 4 backward passes, an optimizer step every 2: 2 steps
        model(torch.randn(8, 32)).sum().backward()
        if i % 2 == 1:
            opt.step()
            opt.zero_grad()


def test_steps_with_the_optimizer_given_to_the_constructor():
    model, opt = _mlp()
    with ComputeAudit(model=model, optimizer=opt) as run:
        _loop(model, opt)
    assert run.steps == 2


def test_steps_with_the_optimizer_given_to_watch():
    model, opt = _mlp()
    with ComputeAudit() as run:
        run.watch(model, opt)
        _loop(model, opt)
    assert run.steps == 2
