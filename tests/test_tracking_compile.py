"""torch.compile'd models: the audit never stops compiled code from running, and counts it exactly.

A dispatch mode active while Dynamo runs a compiled frame makes Dynamo skip the frame, for good:
audited that way, the run trains eagerly from its first audited call on. So a compiled call with a
new key is counted on meta copies of the model and its inputs (outside the step), and the compiled
graph runs as it would unaudited. A counting backend (aot_eager with a counter around the forward
and backward graphs it compiles) shows the graphs run as often with the audit as without.

Closed form (the MLP 32-64-10 on data, as tests/test_tracking.py): a row costs 2x32x64 + 2x64x10
forward; the first layer's weight gradient and the second's weight and input gradients backward.
"""
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from auditor.tracking import ComputeAudit

IN, HID, OUT = 32, 64, 10
FORWARD = 2 * IN * HID + 2 * HID * OUT
TRAIN = FORWARD + 2 * IN * HID + 2 * (2 * HID * OUT)
BATCHES = [8, 8, 8, 5, 8, 8, 3]


class Graphs:
    """A torch.compile backend: aot_eager, counting the calls of the graphs it compiled."""

    def __init__(self):
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        self.calls = {"forward": 0, "backward": 0}

        def compiler(kind):
            def compile_graph(gm, example_inputs):
                run = make_boxed_func(gm.forward)

                def counted(args):
                    self.calls[kind] += 1
                    return run(args)
                counted._boxed_call = True
                return counted
            return compile_graph
        self.backend = aot_autograd(fw_compiler=compiler("forward"), bw_compiler=compiler("backward"))

    def since(self, before: dict) -> dict:
        return {k: self.calls[k] - before[k] for k in self.calls}


def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def loop(model, opt, batches=BATCHES):
    g = torch.Generator().manual_seed(1)
    for b in batches:
        model(torch.randn(b, IN, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def fresh():
    """A new MLP and the counting backend, with Dynamo's caches emptied (each test compiles anew)."""
    torch._dynamo.reset()
    graphs = Graphs()
    model, opt = mlp()
    return graphs, model, opt


def compiled_run(audit: bool, warm: bool = True, in_place: bool = False, **options):
    """The loop on a freshly compiled MLP (warmed on every batch shape first, unless not ``warm``):
    the audit (or None) and the compiled graphs' calls during the loop."""
    graphs, model, opt = fresh()
    if in_place:
        model.compile(backend=graphs.backend)
        compiled = model
    else:
        compiled = torch.compile(model, backend=graphs.backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if warm:
            loop(compiled, opt, sorted(set(BATCHES)))
        before = dict(graphs.calls)
        if audit:
            with ComputeAudit(model=compiled, optimizer=opt, **options) as run:
                loop(compiled, opt)
        else:
            run = None
            loop(compiled, opt)
    return run, graphs.since(before)


@pytest.mark.parametrize("warm", [True, False], ids=["warmed", "compiled-in-the-audit"])
def test_a_compiled_model_runs_its_graphs_and_is_counted_exactly(warm):
    _, unaudited = compiled_run(audit=False, warm=warm)
    run, audited = compiled_run(audit=True, warm=warm)
    assert audited == unaudited == {"forward": len(BATCHES), "backward": len(BATCHES)}  # not one eager call
    model, opt = mlp()
    with FlopCounterMode(display=False) as every_op:
        loop(model, opt)
    assert run.total_flops == every_op.get_total_flops() == sum(BATCHES) * TRAIN
    assert run.counted_signatures == 3 and not run.uncovered
    assert any("compiled model" in a for a in run.estimate.assumptions)


def test_a_model_compiled_in_place_runs_its_graphs_and_is_counted_exactly():
    """module.compile() compiles Module._call_impl, hooks included: the audit's hooks are kept out of
    Dynamo's tracing (they run eagerly between the compiled pieces). Every call runs the compiled
    graphs. (With torch 2.13 a Sequential compiled in place with no hook at all runs no graph: Dynamo
    skips _call_impl then, for good; so the reference here is a call count, not an unaudited run, and
    the model is first called under the audit.)"""
    run, audited = compiled_run(audit=True, in_place=True, warm=False)
    assert audited == {"forward": len(BATCHES), "backward": len(BATCHES)}
    assert run.total_flops == sum(BATCHES) * TRAIN and not run.uncovered


def test_work_after_a_compiled_call_is_its_tail_and_counted():
    """A contrastive pair through a compiled model: the similarity matrix outside it, (B x 10)(10 x B)
    forward and its two input gradients, is counted live while the compiled graphs run."""
    def pairs(model, opt, steps=3, batch=8):
        g = torch.Generator().manual_seed(2)
        for _ in range(steps):
            z1, z2 = model(torch.randn(batch, IN, generator=g)), model(torch.randn(batch, IN, generator=g))
            torch.nn.functional.cross_entropy(z1 @ z2.T, torch.arange(batch)).backward()
            opt.step()
            opt.zero_grad()

    graphs, model, opt = fresh()
    compiled = torch.compile(model, backend=graphs.backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs(compiled, opt, steps=1)
        before = dict(graphs.calls)
        with ComputeAudit(model=compiled, optimizer=opt) as run:
            pairs(compiled, opt)
    assert graphs.since(before) == {"forward": 6, "backward": 6}
    assert run.total_flops == 3 * (2 * 8 * TRAIN + 3 * 2 * 8 * 8 * OUT)


def test_a_compiled_block_inside_an_eager_model():
    """One compiled submodule: the model is counted on meta copies too, so its compiled block never
    sees a dispatch mode (which would turn it eager for the rest of the process)."""
    graphs, model, opt = fresh()
    model[2] = torch.compile(model[2], backend=graphs.backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop(model, opt, sorted(set(BATCHES)))
        before = dict(graphs.calls)
        with ComputeAudit(model=model, optimizer=opt) as run:
            loop(model, opt)
    assert graphs.since(before) == {"forward": len(BATCHES), "backward": len(BATCHES)}
    assert run.total_flops == sum(BATCHES) * TRAIN


def test_compiled_evaluation_calls_are_counted_without_grad():
    graphs, model, _ = fresh()
    compiled = torch.compile(model, backend=graphs.backend)
    with torch.no_grad():
        compiled(torch.randn(4, IN))
        before = dict(graphs.calls)
        with ComputeAudit(model=compiled) as run:
            for _ in range(3):
                compiled(torch.randn(4, IN))
    assert graphs.since(before)["forward"] == 3
    assert run.eval_flops == 3 * 4 * FORWARD and run.total_flops == 0


def test_hooks_on_the_original_module_of_a_compiled_one_are_loud_not_zero():
    """The compiled graph calls the original module's code without its hooks: watching the original
    module while the compiled one trains saw no call at all. Now the parameters' gradients give it
    away: a warning, and the figure marked incomplete."""
    graphs, model, opt = fresh()
    compiled = torch.compile(model, backend=graphs.backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop(compiled, opt, sorted(set(BATCHES)))
    with pytest.warns(UserWarning, match="hooks did not see"):
        with ComputeAudit(model=model, optimizer=opt) as run:
            loop(compiled, opt, [8, 8])
    assert run.total_flops == 0 and run.uncovered
    assert not run.estimate.complete


def test_a_compiled_call_that_cannot_run_on_meta_is_loud_and_still_compiled():
    class Reads(torch.nn.Module):  # asks its data a question meta tensors cannot answer
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(IN, OUT)

        def forward(self, x):
            return self.lin(x) * int(x.abs().sum().item() > 0)

    graphs, _, _ = fresh()
    model = Reads()
    compiled = torch.compile(model, backend=graphs.backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled(torch.randn(4, IN)).sum().backward()
        before = dict(graphs.calls)
    with pytest.warns(UserWarning, match="could not be counted on the meta device"):
        with ComputeAudit(model=compiled) as run:
            for _ in range(2):
                compiled(torch.randn(4, IN)).sum().backward()
    assert graphs.since(before)["forward"] >= 2
    assert not run.estimate.complete
