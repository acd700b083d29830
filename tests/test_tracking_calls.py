"""Live tracking with any number of calls of the model per step: integer-equal to
FlopCounterMode wrapped around the same work (it counts every op of every step), and to the
closed form, for pairs of calls (contrastive, DPO), calls of different shapes, a call without
grad or without a backward, backwards over two calls' losses, and a backward run twice.
"""
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from auditor.tracking import calls as tracking
from auditor.counting.mode import CountingMode
from auditor.tracking import ComputeAudit
from helpers import tiny_gpt2

IN, HID, OUT = 32, 64, 10
# A row of data through Linear(32, 64) -> ReLU -> Linear(64, 10):
FORWARD = 2 * IN * HID + 2 * HID * OUT            # 5376: two matmuls, a multiply-add is 2
# The data needs no gradient: the first layer has its weight gradient only, the second its
# weight and input gradients.
BACKWARD = 2 * IN * HID + 2 * (2 * HID * OUT)     # 6656
TRAIN = FORWARD + BACKWARD                        # 12032


def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def data(*shape, seed):
    return torch.randn(*shape, IN, generator=torch.Generator().manual_seed(seed))


def audited(loop, model, opt, **options):
    """The loop once, with the audit inside FlopCounterMode: the two count the same work."""
    with FlopCounterMode(display=False) as every_op:
        with ComputeAudit(model=model, optimizer=opt, **options) as run:
            loop(model, opt)
    return run, every_op.get_total_flops()


# ---------------------------------------------------------------- two calls a step, same shapes
def contrastive(model, opt, steps=5, batch=8, accumulate=1):
    for step in range(steps):
        for micro in range(accumulate):
            z1 = model(data(batch, seed=2 * step + micro))
            z2 = model(data(batch, seed=100 + 2 * step + micro))
            logits = z1 @ z2.T  # outside the model: (B x 10)(10 x B)
            torch.nn.functional.cross_entropy(logits, torch.arange(batch)).backward()
        opt.step()
        opt.zero_grad()


def contrastive_step(batch):
    # Two calls; the similarity matrix 2 B^2 10 forward, its two input gradients 2 x 2 B^2 10.
    return 2 * batch * TRAIN + 3 * 2 * batch * batch * OUT


def test_contrastive_pair_is_exact_loss_matmul_included(windows):
    model, opt = mlp()
    run, every_op = audited(contrastive, model, opt)
    assert run.total_flops == every_op == 5 * contrastive_step(8)
    assert run.counted_signatures == 2 and len(windows) == 1  # counted in the first step, then replayed
    assert run.steps == 5 and run.eval_flops == 0


def test_contrastive_pairs_with_accumulation():
    model, opt = mlp()
    run, every_op = audited(lambda m, o: contrastive(m, o, steps=3, accumulate=3), model, opt)
    assert run.total_flops == every_op == 9 * contrastive_step(8)
    assert run.steps == 3


# ---------------------------------------------------------------- DPO: chosen and rejected
DPO_LENGTHS = [(16, 12), (16, 12), (12, 16), (16, 20), (12, 12), (16, 12), (20, 16)]  # tokens of each


def dpo(model, opt):
    for step, (chosen, rejected) in enumerate(DPO_LENGTHS):
        logp_c = model(data(2, chosen, seed=step)).log_softmax(-1).mean()
        logp_r = model(data(2, rejected, seed=50 + step)).log_softmax(-1).mean()
        (-torch.nn.functional.logsigmoid(0.1 * (logp_c - logp_r))).backward()
        opt.step()
        opt.zero_grad()


def test_dpo_chosen_and_rejected_of_varying_lengths_are_exact():
    """Step 4 meets a known first call (16 tokens) and a new second one (20): the counter starts
    between them; the first is added from the cache and the second counted."""
    model, opt = mlp()
    run, every_op = audited(dpo, model, opt)
    rows = sum(2 * (c + r) for c, r in DPO_LENGTHS)  # 2 sequences a call, a row a token
    assert run.total_flops == every_op == rows * TRAIN
    # (length, position): 16/0, 12/1, 12/0, 16/1, 20/1, 20/0 counted; the rest repeats
    assert run.counted_signatures == 6


# ---------------------------------------------------------------- calls without grad or backward
def with_reference(model, opt, steps=4):
    for step in range(steps):
        x = data(8, seed=step)
        policy = model(x)
        with torch.no_grad():
            reference = model(x)  # a reference (or teacher) forward inside the training step
        ((policy - reference) ** 2).mean().backward()
        opt.step()
        opt.zero_grad()


def test_no_grad_call_inside_a_step_is_evaluation_and_the_backward_is_kept():
    model, opt = mlp()
    run, every_op = audited(with_reference, model, opt)
    assert run.total_flops == 4 * 8 * TRAIN
    assert run.eval_flops == 4 * 8 * FORWARD
    assert run.total_flops + run.eval_flops == every_op


def frozen_branch(model, opt, steps=5):
    for step in range(steps):
        a = model(data(8, seed=step))
        b = model(data(4, seed=70 + step))  # grad on, but only its value is used: no backward reaches it
        (a * b.detach().sum()).sum().backward()
        opt.step()
        opt.zero_grad()


def test_a_call_whose_output_gets_no_backward_is_charged_its_forward_only(windows):
    model, opt = mlp()
    run, every_op = audited(frozen_branch, model, opt)
    assert run.total_flops == every_op == 5 * (8 * TRAIN + 4 * FORWARD)
    assert len(windows) == 1


def test_a_backward_later_reaching_a_call_first_seen_without_one_is_flagged_not_dropped():
    """Step 1 leaves the second call without a backward; step 2 backpropagates it. The tracker
    cannot count a backward it did not see coming: it says so, and counts the key again."""
    model, opt = mlp()

    def loop(m, o):
        for step in range(4):
            a, b = m(data(8, seed=step)), m(data(4, seed=70 + step))
            (a.sum() + (b.sum() if step else b.detach().sum())).backward()
            o.step()
            o.zero_grad()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, every_op = audited(loop, model, opt)
    assert any("was not counted" in str(w.message) for w in caught)
    assert tracking._UNCOUNTED_BACKWARD in run.estimate.uncovered_ops
    missing = 4 * BACKWARD  # the one backward of the 4-row call in step 2
    assert run.total_flops == every_op - missing == 4 * (8 * TRAIN + 4 * FORWARD) + 2 * 4 * BACKWARD


# ---------------------------------------------------------------- backwards over several calls
@pytest.mark.parametrize("how", ["sum of losses", "one backward each", "twice with retain_graph"])
def test_backwards_over_two_calls_of_the_same_shape(how, windows):
    def loop(m, o):
        for step in range(4):
            l1 = m(data(8, seed=step)).pow(2).mean()
            l2 = m(data(8, seed=40 + step)).pow(2).mean()
            if how == "sum of losses":
                (l1 + l2).backward()
            elif how == "one backward each":
                l1.backward()
                l2.backward()
            else:
                (l1 + l2).backward(retain_graph=True)
                (l1 + l2).backward()
            o.step()
            o.zero_grad()

    model, opt = mlp()
    run, every_op = audited(loop, model, opt)
    backwards = 2 if how == "twice with retain_graph" else 1
    assert run.total_flops == every_op == 4 * (16 * FORWARD + backwards * 16 * BACKWARD)
    assert len(windows) == 1


def test_without_an_optimizer_a_step_is_a_backward_pass():
    model, _ = mlp()
    with FlopCounterMode(display=False) as every_op:
        with ComputeAudit(model=model) as run:
            for step in range(3):
                (model(data(8, seed=step)) * model(data(8, seed=9 + step))).sum().backward()
    assert run.steps == 3
    assert run.total_flops == every_op.get_total_flops() == 3 * 16 * TRAIN


def test_a_grad_enabled_evaluation_loop_then_training_stays_exact(windows):
    """Forwards with grad on and no backward (a loop that forgot no_grad): each position is
    counted once (at most 16 + 1 windows), then training; nothing is charged twice."""
    model, opt = mlp()

    def loop(m, o):
        for i in range(30):
            m(data(4, seed=i))
        for step in range(3):
            m(data(8, seed=200 + step)).sum().backward()
            o.step()
            o.zero_grad()

    run, every_op = audited(loop, model, opt)
    assert run.total_flops == every_op == 30 * 4 * FORWARD + 3 * 8 * TRAIN
    assert len(windows) <= tracking._POSITIONS + 2


class ExtraLayerForPositiveInputs(torch.nn.Module):
    """Data decides the work: an extra 64 x 64 layer when the first input is positive."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(IN, HID), torch.nn.Linear(HID, HID), torch.nn.Linear(HID, OUT)

    def forward(self, x):
        h = self.a(x).relu()
        if x[0, 0] > 0:
            h = self.b(h).relu()
        return self.c(h)


def test_calls_with_the_same_inputs_doing_different_work_are_counted_every_time():
    """The first call of each step has a new batch size, so each step is counted; the second is
    then counted again too, and twice with different results: it is never cached after that,
    also once the first call repeats."""
    torch.manual_seed(0)
    model = ExtraLayerForPositiveInputs()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    signs = [1, -1, 1, 1, -1, -1]

    def loop(m, o):
        for step, sign in enumerate(signs):
            first = m(-data(2 + step if step < 3 else 2, seed=step).abs())  # never the extra layer
            x = data(4, seed=60 + step).abs() * sign
            (first.sum() + m(x).sum()).backward()
            o.step()
            o.zero_grad()

    with pytest.warns(UserWarning, match="did different work"):
        run, every_op = audited(loop, model, opt)
    assert run.total_flops == every_op
    extra = 3 * 2 * HID * HID  # the extra layer, its input and weight gradients
    firsts = [2, 3, 4, 2, 2, 2]
    assert every_op == (sum(firsts) + 4 * len(signs)) * TRAIN + 4 * extra * signs.count(1)


# ---------------------------------------------------------------- a transformer, two calls a step
def gpt2():
    model = tiny_gpt2(dropout=False)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


GPT2_PAIRS = [(16, 24), (16, 24), (24, 16), (16, 32), (16, 24)]


def gpt2_dpo(model, opt):
    g = torch.Generator().manual_seed(3)
    for chosen, rejected in GPT2_PAIRS:
        c = torch.randint(0, 100, (2, chosen), generator=g)
        r = torch.randint(0, 100, (2, rejected), generator=g)
        loss_c = model(input_ids=c, labels=c).loss
        loss_r = model(input_ids=r, labels=r).loss
        (-torch.nn.functional.logsigmoid(loss_r - loss_c)).backward()
        opt.step()
        opt.zero_grad()


def gpt2_closed_form(lengths, d=64, layers=2, vocab=100, sequences=2):
    """GPT-2 training matmuls: 3 x (2 x 12 d^2 per layer per token, 2 d V per token for the tied
    head, 2 x 2 s^2 d per layer per sequence for QK^T and AV): backward twice the forward (the
    embeddings' output needs a gradient, so the first matmul has its input gradient too)."""
    tokens = sequences * sum(lengths)
    attention = sum(layers * sequences * 2 * 2 * s * s * d for s in lengths)
    return 3 * (2 * tokens * 12 * d * d * layers + 2 * tokens * d * vocab + attention)


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_gpt2_chosen_and_rejected_equal_counting_every_op(checkpointing):
    model, opt = gpt2()
    if checkpointing:  # non-reentrant, Hugging Face's default (before transformers 5: gradient_...)
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with ComputeAudit(model=model, optimizer=opt) as run:
        gpt2_dpo(model, opt)
    model.load_state_dict(state)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    every_op = CountingMode(model)
    with every_op:
        gpt2_dpo(model, opt)
    assert run.total_flops == every_op.result.total == gpt2_closed_form([n for pair in GPT2_PAIRS for n in pair])
    assert run.recompute_flops == every_op.result.recompute
    assert (run.recompute_flops > 0) == checkpointing


def test_generation_counts_each_decoding_step_over_its_growing_cache():
    """generate() calls the model once per token with a key-value cache object, whose contents
    torch's pytree does not open: the cache's positions must be part of the call's key, or every
    decoding step is taken for the first (attention over 6 positions charged for 13)."""
    d, layers, vocab, prompt, new = 32, 2, 50, 5, 8
    model = tiny_gpt2(n_embd=d, n_layer=layers, n_head=2, vocab_size=vocab, eos_token_id=0, bos_token_id=0).eval()
    ids = torch.randint(1, vocab, (1, prompt))
    with ComputeAudit(model=model) as run:
        model.generate(ids, max_new_tokens=new, do_sample=False, pad_token_id=0)
    every_op = CountingMode(model)
    with every_op:
        model.generate(ids, max_new_tokens=new, do_sample=False, pad_token_id=0)
    # Forward only: the prompt of 5 tokens, then 7 more calls of one token each over 6..12
    # positions (the 8th token comes out of the 7th call). Per token and layer 2 x 12 d^2;
    # attention 2 x 2 x (queries x positions) x d per layer; the head 2 d V once a call
    # (generate asks for the last position's logits only).
    calls = [(prompt, prompt)] + [(1, prompt + i) for i in range(1, new)]
    closed = sum(2 * q * 12 * d * d * layers + layers * 2 * 2 * q * k * d + 2 * d * vocab for q, k in calls)
    assert run.eval_flops == every_op.result.forward == closed
    assert run.total_flops == 0
