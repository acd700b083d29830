"""Live tracking: integer equality with counting every step, at a fraction of the cost."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import MixtralConfig, MixtralForCausalLM

from auditor import tracking
from auditor.counting.mode import CountingMode
from auditor.tracking import ComputeAudit, ComputeBudgetExceeded, audit
from helpers import invoke, tiny_gpt2


def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


MLP_BATCHES = [8, 8, 8, 5, 8, 8, 3]  # a short last batch, and an odd one in the middle


def mlp_loop(model, opt, accumulate=2):
    for i, b in enumerate(MLP_BATCHES):
        model(torch.randn(b, 32)).pow(2).mean().backward()
        if i % accumulate == accumulate - 1 or i == len(MLP_BATCHES) - 1:
            opt.step()
            opt.zero_grad()


def test_mlp_equals_flop_counter_mode_every_step_and_closed_form():
    model, opt = mlp()
    with ComputeAudit(model=model, optimizer=opt) as run:
        mlp_loop(model, opt)
    model, opt = mlp()
    with FlopCounterMode(display=False) as every_step:
        mlp_loop(model, opt)
    assert run.total_flops == every_step.get_total_flops()
    per_sample = 2 * 32 * 64 + 2 * 64 * 10
    # First layer: no input gradient (1x backward); the second: 2x.
    assert run.total_flops == sum(MLP_BATCHES) * (per_sample + 2 * 32 * 64 + 2 * 2 * 64 * 10)
    assert run.counted_signatures == 3  # batch 8, 5 and 3: each counted once
    assert run.steps == 4


def test_eval_and_no_grad_are_apart():
    model, opt = mlp()
    with ComputeAudit(model=model, optimizer=opt) as run:
        mlp_loop(model, opt)
        model.eval()
        with torch.no_grad():
            model(torch.randn(4, 32))
            model(torch.randn(4, 32))
    per_sample = 2 * 32 * 64 + 2 * 64 * 10
    assert run.eval_flops == 8 * per_sample
    assert run.total_flops == sum(MLP_BATCHES) * (3 * per_sample - 2 * 32 * 64)


def gpt2(**config):
    model = tiny_gpt2(**config)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def gpt2_loop(model, opt):
    g = torch.Generator().manual_seed(1)
    for i, seq in enumerate([16, 16, 32, 16, 24, 32, 32, 8]):  # varying lengths, accumulation of 2
        ids = torch.randint(0, 100, (2, seq), generator=g)
        model(input_ids=ids, labels=ids).loss.backward()
        if i % 2 == 1:
            opt.step()
            opt.zero_grad()


def test_gpt2_varying_lengths_and_accumulation_equal_counting_every_step():
    model, opt = gpt2()
    with ComputeAudit(model=model, optimizer=opt) as run:
        gpt2_loop(model, opt)
    model, opt = gpt2()
    every_step = CountingMode(model)
    with every_step:
        gpt2_loop(model, opt)
    assert run.total_flops == every_step.result.total
    assert run.counted_signatures == 4  # lengths 16, 32, 24, 8
    d, t = 64, 2 * (16 + 16 + 32 + 16 + 24 + 32 + 32 + 8)
    matmuls = 2 * t * (2 * 12 * d * d) + 2 * t * d * 100
    attention = sum(2 * 2 * 2 * s * s * d * 2 for s in [16, 16, 32, 16, 24, 32, 32, 8])
    assert run.total_flops == 3 * (matmuls + attention)


def test_gradient_checkpointing_rerun_is_recompute_not_training_compute():
    model, opt = gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    # non-reentrant, Hugging Face's default (the method's name before transformers 5: gradient_...)
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    with ComputeAudit(model=model, optimizer=opt) as run:
        gpt2_loop(model, opt)
    d, lengths = 64, [16, 16, 32, 16, 24, 32, 32, 8]
    t = 2 * sum(lengths)
    attention = sum(2 * 2 * 2 * s * s * d * 2 for s in lengths)
    assert run.total_flops == 3 * (2 * t * (2 * 12 * d * d) + 2 * t * d * 100 + attention)
    # Each block is rerun up to its MLP output projection, which saves its inputs and stops it.
    assert run.recompute_flops == 2 * 2 * t * 8 * d * d + attention


def test_small_moe_on_real_weights_counts_what_the_routing_did():
    torch.manual_seed(0)
    cfg = MixtralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=100, num_local_experts=4, num_experts_per_tok=2)
    model = MixtralForCausalLM(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loop(m, o):
        g = torch.Generator().manual_seed(2)
        for _ in range(4):
            ids = torch.randint(0, 100, (2, 16), generator=g)
            m(input_ids=ids, labels=ids).loss.backward()
            o.step()
            o.zero_grad()

    state = {k: v.clone() for k, v in model.state_dict().items()}
    with ComputeAudit(model=model, optimizer=opt) as run:
        loop(model, opt)
    model.load_state_dict(state)
    every_step = CountingMode(model)
    with every_step:
        loop(model, opt)
    assert run.total_flops == every_step.result.total
    assert run.counted_signatures == 1  # routing changes every step; tokens x k rows do not


def test_decorator_with_the_audit_passed_in():
    model, opt = mlp()

    @audit()
    def train(audit):
        audit.watch(model, opt)
        mlp_loop(model, opt)
        return "done"

    assert train() == "done"
    per_sample = 2 * 32 * 64 + 2 * 64 * 10
    assert train.last_audit.total_flops == sum(MLP_BATCHES) * (3 * per_sample - 2 * 32 * 64)


def test_stop_guard_fires_before_the_crossing_step(tmp_path):
    per_step = 8 * (3 * (2 * 32 * 64 + 2 * 64 * 10) - 2 * 32 * 64)  # 8 samples a step
    from budgets import budget_rule

    budget = budget_rule(tmp_path / "budget.yaml", "tiny-budget", 3 * per_step + per_step // 2)
    model, opt = mlp()
    steps_done = 0
    with pytest.raises(ComputeBudgetExceeded, match="tiny-budget"):
        with ComputeAudit(model=model, optimizer=opt, rules=[budget], on_exceed="stop") as run:
            for _ in range(10):
                model(torch.randn(8, 32)).pow(2).mean().backward()
                opt.step()
                opt.zero_grad()
                steps_done += 1
    # 3 steps fit under 3.5 steps' worth; the 4th would cross: stopped before it ran.
    assert steps_done == 3 and run.total_flops == 3 * per_step


def test_hooks_only_on_the_top_module():
    model, opt = mlp()
    with ComputeAudit(model=model, optimizer=opt):
        assert len(model._forward_pre_hooks) == 1 and len(model._forward_hooks) == 1
        assert all(not m._forward_pre_hooks for m in list(model.modules())[1:])
    assert not model._forward_pre_hooks and not model._forward_hooks


def test_on_exceed_must_be_known():
    with pytest.raises(ValueError, match="on_exceed"):
        ComputeAudit(on_exceed="explode")
    assert tracking.ComputeAudit is ComputeAudit


def test_run_dir_ledger_dossier_and_verify_catching_a_changed_byte(tmp_path):
    model, opt = mlp()
    with ComputeAudit(tmp_path / "run", model, opt, flush_every_steps=1) as run:
        mlp_loop(model, opt)
    assert (tmp_path / "run" / "dossier.json").is_file()
    ok = invoke("verify", tmp_path / "run")
    assert ok.exit_code == 0 and f"total {run.total_flops:,} FLOPs" in ok.output
    ledger = tmp_path / "run" / "ledger.jsonl"
    raw = ledger.read_bytes()
    at = raw.index(b'"flops":') + len(b'"flops":')  # a digit of the second record's interval FLOPs
    at = raw.index(b'"flops":', at) + len(b'"flops":')
    changed = bytearray(raw)
    changed[at] = ord("9") if raw[at] != ord("9") else ord("8")
    ledger.write_bytes(bytes(changed))
    bad = invoke("verify", tmp_path / "run")
    assert bad.exit_code == 1 and "record seq 1" in bad.output


@pytest.mark.parametrize("given_to", ["constructor", "watch"])
def test_a_step_is_an_optimizer_step_however_the_optimizer_is_given(given_to):
    """7 backward passes, an optimizer step after every 2nd and the last: 4 steps. (watch() once
    left the optimizer unset, so every backward ended a step.)"""
    model, opt = mlp()
    if given_to == "constructor":
        with ComputeAudit(model=model, optimizer=opt) as run:
            mlp_loop(model, opt)
    else:
        with ComputeAudit() as run:
            run.watch(model, opt)
            mlp_loop(model, opt)
    assert run.steps == 4


def test_a_compiled_model_is_counted_like_the_eager_one():
    """torch.compile'd steps, warmed before the audit starts: still every matmul (aot_eager here,
    no C++ compiler needed; inductor on CPU gave the same total when measured by hand)."""
    import warnings

    model, opt = mlp()
    compiled = torch.compile(model, backend="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: global module hooks fire again for the OptimizedModule
        for _ in range(2):
            compiled(torch.randn(8, 32)).sum().backward()
        opt.zero_grad()
        with ComputeAudit(model=compiled, optimizer=opt) as run:
            mlp_loop(compiled, opt)
    per_sample = 2 * 32 * 64 + 2 * 64 * 10
    assert run.total_flops == sum(MLP_BATCHES) * (3 * per_sample - 2 * 32 * 64)
