"""Phases: ``with run.phase("rollout"):`` tags the passes inside; each rule counts the phases its
file names; the ledger and the dossier break the total down by phase, and verify checks them.

Every figure here is an exact integer checked against torch's FlopCounterMode wrapped around the
same work (each part under its own counter, inside the audit: both see the same ops), or against
the closed form of the MLP 32-64-10 (tests/test_tracking_calls.py).
"""
import json
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from budgets import budget_rule

from auditor.estimate import Estimate
from auditor.rules.selection import load_rules
from auditor.rules.verdicts import evaluate
from auditor.tracking import ComputeAudit, ComputeBudgetExceeded
from helpers import invoke, tiny_gpt2

IN, HID, OUT = 32, 64, 10
FORWARD = 2 * IN * HID + 2 * HID * OUT
TRAIN = FORWARD + 2 * IN * HID + 2 * (2 * HID * OUT)


def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def data(n, seed):
    return torch.randn(n, IN, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- tagging
def tagged_loop(run, model, opt, steps=3):
    for step in range(steps):
        with run.phase("rollout"), torch.no_grad():
            model(data(6, seed=step))                       # generation without grad: rollout
        with run.phase("reward_model"):
            reward = model(data(2, seed=50 + step))         # with grad, its backward after the block
        (model(data(4, seed=100 + step)).pow(2).mean() + reward.mean()).backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            model(data(3, seed=200 + step))                 # untagged, without grad: eval


def test_each_phase_gets_its_calls_forward_and_backward():
    model, opt = mlp()
    with ComputeAudit(model=model, optimizer=opt) as run:
        tagged_loop(run, model, opt)
    # reward_model: 2 rows a step with grad; its backward comes outside the phase block and is its own.
    assert run.flops_by_phase == {"train": 3 * 4 * TRAIN, "eval": 3 * 3 * FORWARD, "rollout": 3 * 6 * FORWARD,
                                  "reward_model": 3 * 2 * TRAIN}
    assert run.total_flops == 3 * 4 * TRAIN and run.eval_flops == 3 * 3 * FORWARD
    assert run.estimate.phases == run.flops_by_phase and run.estimate.flops == run.total_flops


def test_phases_equal_flop_counter_mode_over_each_part():
    model, opt = mlp()
    expected = {"train": 0, "rollout": 0, "eval": 0}
    with ComputeAudit(model=model, optimizer=opt) as run:
        for step in range(4):
            with FlopCounterMode(display=False) as part, run.phase("rollout"), torch.no_grad():
                model(data(5 + step % 2, seed=step))
            expected["rollout"] += part.get_total_flops()
            with FlopCounterMode(display=False) as part:
                model(data(8, seed=10 + step)).pow(2).mean().backward()
                opt.step()
                opt.zero_grad()
            expected["train"] += part.get_total_flops()
            with FlopCounterMode(display=False) as part, torch.no_grad():
                model(data(2, seed=20 + step))
            expected["eval"] += part.get_total_flops()
    assert run.flops_by_phase == expected
    assert expected["rollout"] == (5 + 6 + 5 + 6) * FORWARD


def test_phase_names_are_checked_and_phases_nest():
    model, _ = mlp()
    with ComputeAudit(model=model) as run:
        with pytest.raises(ValueError, match="phase"):
            run.phase("Roll Out")
        with run.phase("synthetic_data"), torch.no_grad():
            with run.phase("teacher"):
                model(data(1, seed=0))
            model(data(2, seed=1))
    assert run.flops_by_phase == {"train": 0, "eval": 0, "synthetic_data": 2 * FORWARD, "teacher": FORWARD}


# ---------------------------------------------------------------- rules
def test_each_rule_compares_the_sum_of_the_phases_it_counts():
    phases = {"train": 4 * 10 ** 24, "rollout": 3 * 10 ** 24, "synthetic_data": 2 * 10 ** 24, "eval": 5 * 10 ** 24,
              "reward_model": 6 * 10 ** 24, "teacher": 7 * 10 ** 24}
    estimate = Estimate(method="counted", flops=phases["train"], low=phases["train"], high=phases["train"],
                        phases=phases)
    verdicts = {v.rule: v for v in evaluate(estimate.figures(), load_rules(["eu-ai-act", "us-ca-sb53", "us-ny-raise",
                                                                   "kr-ai-basic-act"]), as_of="2027-06-01")}
    eu = verdicts["eu-ai-act-systemic-risk"]
    assert eu.basis_flops["central"] == 4 * 10 ** 24 + 3 * 10 ** 24 + 2 * 10 ** 24   # 9e24: not over 1e25
    assert eu.status == "clear" and "train + rollout + synthetic_data" in eu.reason
    assert any("not counted by this rule" in a and "eval" in a and "teacher" in a for a in eu.assumptions)
    for rule in ("us-ca-sb53-frontier-model", "us-ny-raise-frontier-model"):
        assert verdicts[rule].basis_flops["central"] == 7 * 10 ** 24
    korea = next(v for r, v in verdicts.items() if r.startswith("kr-"))
    assert korea.basis_flops["central"] == 4 * 10 ** 24                               # the default: train
    # A tenth of the rollout more and the EU's figure crosses 1e25; California's does not move far.
    phases["rollout"] += 2 * 10 ** 24
    estimate = Estimate(method="counted", flops=phases["train"], low=phases["train"], high=phases["train"],
                        phases=phases)
    eu = next(v for v in evaluate(estimate.figures(), load_rules(["eu-ai-act"]), as_of="2027-06-01")
              if v.rule == "eu-ai-act-systemic-risk")
    assert eu.status == "crossed" and eu.basis_flops["low"] == 11 * 10 ** 24


def test_a_rule_file_names_its_phases(tmp_path):
    from auditor.rules.rule_file import RuleError

    ok = budget_rule(tmp_path / "ok.yaml", "rl-budget", 100, "counts_phases: [train, rollout, my_phase]\n")
    assert load_rules([ok])[0].counts_phases == ["train", "rollout", "my_phase"]
    assert load_rules([budget_rule(tmp_path / "default.yaml", "rl-default", 100)])[0].counts_phases == ["train"]
    for bad, said in (("[]", "non-empty"), ("[train, train]", "twice"), ("[Train]", "phase name"), ("train", "list")):
        path = budget_rule(tmp_path / "bad.yaml", "rl-bad", 100, f"counts_phases: {bad}\n")
        with pytest.raises(RuleError, match="counts_phases") as caught:
            load_rules([path])
        assert said in str(caught.value)


def test_the_guard_counts_the_phases_of_its_rule(tmp_path):
    """A budget that counts rollouts stops the run before the rollout that would cross it, though
    the training figure alone is far below."""
    per_rollout = 6 * FORWARD
    budget = budget_rule(tmp_path / "budget.yaml", "rl-budget", 4 * per_rollout + per_rollout // 2,
                         "counts_phases: [rollout]\n")
    model, _ = mlp()
    done = 0
    with pytest.raises(ComputeBudgetExceeded, match="rl-budget"):
        with ComputeAudit(model=model, rules=[budget], on_exceed="stop") as run:
            for step in range(10):
                with run.phase("rollout"), torch.no_grad():
                    model(data(6, seed=step))
                done += 1
    assert done == 4 and run.flops_by_phase["rollout"] == 4 * per_rollout


# ---------------------------------------------------------------- ledger, dossier, verify
def test_the_ledger_and_dossier_break_the_total_down_by_phase_and_verify_checks_it(tmp_path):

    from auditor.record import dossier
    from auditor.record.ledger import read_ledger

    model, opt = mlp()
    # a record a step (flush_every_steps=1), so that each step's phases can be read apart
    with ComputeAudit(tmp_path / "run", model, opt, rules=["eu-ai-act", "us-ca-sb53"], flush_every_steps=1) as run:
        tagged_loop(run, model, opt)
    records = read_ledger(tmp_path / "run").records
    intervals = [r for r in records if r["kind"] == "interval"]
    # Three steps' intervals, then the last evaluation (after the last step) alone, at stop().
    assert [r.get("phases") for r in intervals] == [{"reward_model": 2 * TRAIN, "rollout": 6 * FORWARD}] * 3 + [None]
    data = json.loads((tmp_path / "run" / "dossier.json").read_text())
    assert data["tracked"]["flops_by_phase"] == run.flops_by_phase
    assert data["estimates"][0]["flops_by_phase"] == run.flops_by_phase
    eu = next(v for v in data["verdicts"] if v["rule"] == "eu-ai-act-systemic-risk")
    assert eu["basis_flops"]["central"] == 3 * 4 * TRAIN + 3 * 6 * FORWARD   # train + rollout, not the rest
    ok = invoke("verify", tmp_path / "run")
    assert ok.exit_code == 0, ok.output
    # A dossier re-sealed with another rollout figure: the seal is right, the meaning is not.
    data["tracked"]["flops_by_phase"]["rollout"] += 1
    dossier.write(dossier.seal(data), tmp_path / "run" / "dossier.json")
    bad = invoke("verify", tmp_path / "run")
    assert bad.exit_code == 1 and "tracked.flops_by_phase" in bad.output and "rollout" in bad.output


def test_the_ledger_refuses_bad_phases(tmp_path):
    from auditor.record.ledger import LedgerError, read_ledger
    from auditor.record.ledger_writer import Ledger

    led = Ledger(tmp_path)
    for phases, error in (({"train": 1}, ValueError), ({"rollout": -1}, ValueError), ({"rollout": 1.5}, TypeError),
                          ({"Roll": 1}, ValueError), (["rollout"], TypeError)):
        with pytest.raises(error):
            led.append(1, 10, phases=phases)
    led.append(1, 10, phases={"rollout": 5})
    led.close()
    line = (tmp_path / "ledger.jsonl").read_bytes().splitlines()[1]
    assert b'"phases":{"rollout":5}' in line
    assert read_ledger(tmp_path).records[1]["phases"] == {"rollout": 5}
    # A phases field on a close record is refused by the reader (with a valid hash: made by hand).
    from auditor.record.ledger import canonical, check_record, record_hash

    close = dict(read_ledger(tmp_path).records[-1], phases={"rollout": 1})
    close["hash"] = record_hash(close)
    assert "carries FLOPs" in check_record(close, canonical(close) + b"\n", read_ledger(tmp_path).records[1])
    with pytest.raises(LedgerError):
        Ledger(tmp_path)


def test_a_resumed_run_keeps_the_phases_before_its_checkpoint(tmp_path):
    model, opt = mlp()
    with ComputeAudit(tmp_path, model, opt, flush_every_steps=1) as run:   # a record a step: resumable at step 1
        tagged_loop(run, model, opt, steps=2)
    with ComputeAudit(tmp_path, model, opt, resume_step=1) as run:
        tagged_loop(run, model, opt, steps=1)
    # Kept: step 1's interval (its rollout, reward model and training). The evaluation after step 1
    # went into step 2's interval, rolled back with it; the resumed run's own step and evaluation
    # come after.
    assert run.flops_by_phase == {"train": 2 * 4 * TRAIN, "eval": 3 * FORWARD, "rollout": 2 * 6 * FORWARD,
                                  "reward_model": 2 * 2 * TRAIN}


# ---------------------------------------------------------------- generate(): decoding steps from a line
def gpt2(seed=0):
    return tiny_gpt2(seed=seed, dropout=False, n_embd=32, n_head=2, vocab_size=64, eos_token_id=0, bos_token_id=0,
                     attn_implementation="eager")   # matmuls FlopCounterMode counts


def decoding_closed_form(prompt, new, batch, d=32, layers=2, vocab=64):
    """Forward only: the prompt, then new - 1 calls of one token over prompt + i positions; per
    token and layer 2 x 12 d^2, attention 2 x 2 x queries x positions x d, the head on the last
    position (tests/test_tracking_calls.py)."""
    calls = [(prompt, prompt)] + [(1, prompt + i) for i in range(1, new)]
    return batch * sum(2 * q * 12 * d * d * layers + layers * 2 * 2 * q * k * d + 2 * d * vocab for q, k in calls)


def test_generate_under_a_phase_is_exact_and_counts_few_steps(windows):
    model = gpt2().eval()
    prompts = torch.randint(1, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    with ComputeAudit(model=model) as run:
        with FlopCounterMode(display=False) as every_op, run.phase("rollout"):
            for _ in range(3):
                model.generate(prompts, max_new_tokens=20, min_new_tokens=20, do_sample=True, pad_token_id=0)
    assert run.flops_by_phase["rollout"] == every_op.get_total_flops() == 3 * decoding_closed_form(5, 20, 2)
    # The prompt; cache lengths 5, 6, 7 (the line); 14 (twice the longest counted: the check). Not 60.
    assert len(windows) == 5
    assert any("predicted from the line" in a for a in run.estimate.assumptions)


def test_calls_off_the_line_are_caught_not_trusted():
    """A model whose cost stops growing with the length (a window of 6 positions, like a sliding
    window) is on a line for its first lengths: lengths 2, 3 and 4 are counted, 5 to 8 predicted
    from their line, 9 (twice the longest counted) counted and found off it. The predictions for 7
    and 8 were too high: the figure is marked incomplete, and later calls are counted."""
    class Windowed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4, bias=False)

        def forward(self, x, cache):  # cache: positions (a tensor whose length grows)
            return self.lin(x[:, -min(x.shape[1], 6):]) + cache.sum()

    model = Windowed()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        with ComputeAudit(model=model) as run:
            for n in range(2, 20):
                model(torch.randn(1, n, 4), torch.zeros(n))
    every = sum(2 * min(n, 6) * 4 * 4 for n in range(2, 20))
    assert run.eval_flops == every + 2 * 4 * 4 * ((7 - 6) + (8 - 6))
    assert not run.estimate.complete and any("line" in str(w.message) for w in caught)


# ---------------------------------------------------------------- a GRPO-style loop, under the EU and SB 53
def test_grpo_rollouts_count_under_the_eu_and_sb53_and_evaluation_does_not(tmp_path):
    policy = gpt2(seed=1)
    reward_model = gpt2(seed=2)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(3)
    prompts = torch.randint(1, 64, (4, 6), generator=g)
    held_out = torch.randint(1, 64, (2, 16), generator=g)
    expected = dict.fromkeys(("train", "rollout", "reward_model", "eval"), 0)
    with ComputeAudit(tmp_path / "grpo", policy, opt, rules=["eu-ai-act", "us-ca-sb53"]) as run:
        run.watch(reward_model)
        for _ in range(3):
            with FlopCounterMode(display=False) as part, run.phase("rollout"):
                policy.eval()
                sequences = policy.generate(prompts, max_new_tokens=10, min_new_tokens=10, do_sample=True,
                                            pad_token_id=0)
                policy.train()
            expected["rollout"] += part.get_total_flops()
            with FlopCounterMode(display=False) as part, run.phase("reward_model"), torch.no_grad():
                rewards = reward_model(input_ids=sequences).logits[:, -1, 0]
            expected["reward_model"] += part.get_total_flops()
            advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
            with FlopCounterMode(display=False) as part:
                logits = policy(input_ids=sequences).logits[:, :-1]
                logp = logits.log_softmax(-1).gather(-1, sequences[:, 1:, None])[..., 0][:, 6 - 1:].sum(-1)
                (-(advantages * logp).mean()).backward()
                opt.step()
                opt.zero_grad()
            expected["train"] += part.get_total_flops()
            with FlopCounterMode(display=False) as part, torch.no_grad():
                policy(input_ids=held_out)                   # evaluation: untagged, no grad
            expected["eval"] += part.get_total_flops()
    assert all(expected.values())
    assert run.flops_by_phase == expected
    assert expected["rollout"] == 3 * decoding_closed_form(6, 10, 4)
    data = json.loads((tmp_path / "grpo" / "dossier.json").read_text())
    assert data["tracked"]["flops_by_phase"] == expected
    verdicts = {v["rule"]: v for v in data["verdicts"]}
    for rule in ("eu-ai-act-systemic-risk", "us-ca-sb53-frontier-model"):
        assert verdicts[rule]["basis_flops"]["central"] == expected["train"] + expected["rollout"]
        assert "train + rollout" in verdicts[rule]["reason"]
        assert any("eval" in a and "reward_model" in a for a in verdicts[rule]["assumptions"])
    from auditor.record.verify import verify_target

    assert verify_target(tmp_path / "grpo")[0] == 0
