"""Live tracking with any optimizer: anything with a step() is watched; a closure's forward and
backward are training compute; the optimizer's own arithmetic is ``optimizer_flops``, apart."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from auditor.counting.mode import CountingMode
from auditor.counting.optimizer import _ELEMENTWISE_STEPS, elementwise_step
from auditor.tracking import ComputeAudit

IN, HID, OUT, BATCH = 32, 64, 10, 8
FORWARD = 2 * IN * HID + 2 * HID * OUT            # a row through the MLP: two matmuls
TRAIN = 3 * FORWARD - 2 * IN * HID                # backward twice the forward, less the data's input gradient
PARAMETERS = IN * HID + HID + HID * OUT + OUT     # 2762


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))


def batch(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(BATCH, IN, generator=g), torch.randn(BATCH, OUT, generator=g)


def train(model, opt, steps=4):
    for step in range(steps):
        x, y = batch(step)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()


class OrthogonalisedSGD:
    """Not a torch optimizer: a plain object with step() and zero_grad(). Like Muon, a 2-D
    gradient G becomes G G^T G before the update (two matmuls), the rest is plain SGD."""

    def __init__(self, params, lr=0.01):
        self.params, self.lr = list(params), lr

    def step(self):
        for p in self.params:
            g = p.grad
            update = g @ g.T @ g if g.ndim == 2 else g
            p.data.add_(update, alpha=-self.lr)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def orthogonalising(rows, cols):
    # (r x c)(c x r) then (r x r)(r x c): 2 r c r + 2 r r c
    return 2 * rows * cols * rows + 2 * rows * rows * cols


def test_a_plain_object_with_step_is_watched_and_its_matmuls_are_optimizer_work():
    model = mlp()
    opt = OrthogonalisedSGD(model.parameters())
    with FlopCounterMode(display=False) as every_op:
        with ComputeAudit(model=model, optimizer=opt) as run:
            train(model, opt)
    assert run.steps == 4
    assert run.total_flops == 4 * BATCH * TRAIN
    assert run.optimizer_flops == 4 * (orthogonalising(HID, IN) + orthogonalising(OUT, HID))
    assert run.total_flops + run.optimizer_flops == every_op.get_total_flops()
    assert run.estimate.details["optimizer_flops"] == run.optimizer_flops
    assert "step" not in vars(opt)  # the step it had is back


def test_a_plain_step_taking_a_closure_runs_it_as_training():
    class TwiceEvaluated(OrthogonalisedSGD):  # as SAM does: the closure twice a step
        def step(self, closure):
            closure()
            closure()
            super().step()

    model = mlp()
    opt = TwiceEvaluated(model.parameters())

    def loop(m, o):
        for step in range(3):
            x, y = batch(step)

            def closure():
                o.zero_grad()
                loss = torch.nn.functional.mse_loss(m(x), y)
                loss.backward()
                return loss
            o.step(closure)

    with FlopCounterMode(display=False) as every_op:
        with ComputeAudit(model=model, optimizer=opt) as run:
            loop(model, opt)
    assert run.steps == 3
    assert run.total_flops == 3 * 2 * BATCH * TRAIN
    assert run.optimizer_flops == 3 * (orthogonalising(HID, IN) + orthogonalising(OUT, HID))
    assert run.total_flops + run.optimizer_flops == every_op.get_total_flops()


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_lbfgs_closures_are_training_and_its_dot_products_are_optimizer_work(monkeypatch, line_search):
    """LBFGS runs the closure (forward and backward) several times a step, as many as its
    iterations and line search need, and its two-loop recursion is dot products over all
    parameters (each 2 n FLOPs). Both are counted as they come: closures by a wrapper, dots by
    a wrapper on Tensor.dot."""
    dots = []
    original_dot = torch.Tensor.dot

    def counted_dot(self, other):
        dots.append(self.numel())
        return original_dot(self, other)
    monkeypatch.setattr(torch.Tensor, "dot", counted_dot)

    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=6, history_size=3, line_search_fn=line_search)
    closures = []

    def loop(m, o):
        for step in range(3):
            x, y = batch(step)

            def closure():
                closures.append(1)
                o.zero_grad()
                loss = torch.nn.functional.mse_loss(m(x), y)
                loss.backward()
                return loss
            o.step(closure)

    with FlopCounterMode(display=False) as every_op:  # torch's counter has no formula for aten.dot
        with ComputeAudit(model=model, optimizer=opt) as run:
            loop(model, opt)
    assert len(closures) > 3 and dots and set(dots) == {PARAMETERS}
    assert run.steps == 3
    assert run.total_flops == len(closures) * BATCH * TRAIN == every_op.get_total_flops()
    assert run.optimizer_flops == len(dots) * 2 * PARAMETERS
    assert run.eval_flops == 0


@pytest.fixture
def accelerator():
    accelerate = pytest.importorskip("accelerate")
    from accelerate.state import AcceleratorState, GradientState

    def make(**options):
        return accelerate.Accelerator(cpu=True, **options)
    yield make
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize("accumulate", [1, 2])
def test_accelerates_prepared_optimizer(accelerator, accumulate):
    acc = accelerator(gradient_accumulation_steps=accumulate)
    model, opt = acc.prepare(mlp(), torch.optim.SGD(mlp().parameters(), lr=0.01))
    assert type(opt).__name__ == "AcceleratedOptimizer"
    with ComputeAudit(model=model, optimizer=opt) as run:
        for step in range(6):
            with acc.accumulate(model):
                x, y = batch(step)
                acc.backward(torch.nn.functional.mse_loss(model(x), y))
                opt.step()  # a real step only when the gradients are synchronised
                opt.zero_grad()
    assert run.steps == 6 // accumulate
    assert run.total_flops == 6 * BATCH * TRAIN


def test_torchs_elementwise_optimizers_count_nothing_and_others_are_measured():
    """The list elementwise_step() trusts: each of these steps has no counted operator, so the
    tracker does not measure it. Adafactor is measured: its factored second moment is an outer
    product of a row and a column (2 r c for each 2-D parameter)."""
    for name in sorted(_ELEMENTWISE_STEPS):
        model = mlp()
        opt = getattr(torch.optim, name)(model.parameters(), lr=0.01)
        assert elementwise_step(opt)
        for step in range(2):
            x, y = batch(step)
            torch.nn.functional.mse_loss(model(x), y).backward()
            with CountingMode(model) as mode:
                opt.step()
            assert mode.result.total == 0 and not mode.result.uncovered, name
    model = mlp()
    opt = torch.optim.Adafactor(model.parameters(), lr=0.01)
    assert not elementwise_step(opt)
    with ComputeAudit(model=model, optimizer=opt) as run:
        train(model, opt, steps=3)
    assert run.optimizer_flops == 3 * (2 * HID * IN + 2 * OUT * HID)
    assert run.total_flops == 3 * BATCH * TRAIN


def test_something_without_a_step_is_refused_by_name():
    with pytest.raises(TypeError, match="optimizer: expected an object with a step\\(\\) method, got int"):
        ComputeAudit(model=mlp(), optimizer=3).start()


def test_torch_optimizers_keep_their_step_and_lose_the_hooks_at_stop():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with ComputeAudit(model=model, optimizer=opt) as run:
        assert len(opt._optimizer_step_pre_hooks) == 1 and len(opt._optimizer_step_post_hooks) == 1
        train(model, opt)
    assert "step" not in vars(opt) and not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    assert run.steps == 4 and run.optimizer_flops == 0
