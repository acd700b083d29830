"""transformers.Trainer with AuditCallback: exact totals under gradient accumulation, eval apart."""
import pytest
import torch

pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
from transformers import (  # noqa: E402
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from auditor.counting import count_step  # noqa: E402
from auditor.integrations.huggingface import AuditCallback  # noqa: E402
import helpers  # noqa: E402

D, LAYERS, VOCAB, SEQ, BATCH = 32, 2, 64, 16, 2
MAX_STEPS, ACCUMULATE = 4, 2
EVAL_SAMPLES, EVAL_BATCH = 4, 2      # 2 eval batches each evaluation, at steps 2 and 4


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2():
    torch.manual_seed(0)
    return helpers.tiny_gpt2(n_embd=D, n_layer=LAYERS, vocab_size=VOCAB, n_positions=SEQ)


def forward_closed_form(tokens_per_sequence, sequences):
    """GPT-2 matmul FLOPs of one forward: 2 x 12 d^2 per layer per token (qkv, out, 4d MLP),
    2 d V per token (the tied head), and per layer 2 x 2 s^2 d per sequence (QK^T, AV)."""
    t = tokens_per_sequence * sequences
    return 2 * t * 12 * D * D * LAYERS + 2 * t * D * VOCAB + LAYERS * sequences * 2 * 2 * SEQ * SEQ * D


class StepOrder(TrainerCallback):
    """Records when evaluation ran relative to the audit's step count."""

    def __init__(self, audit_cb):
        self.audit_cb, self.evals = audit_cb, []

    def on_evaluate(self, args, state, control, **kwargs):
        self.evals.append((state.global_step, self.audit_cb.audit.steps, self.audit_cb.audit.eval_flops))


def test_trainer_total_is_exact_with_accumulation_and_eval_apart(tmp_path):
    model = tiny_gpt2()
    cb = AuditCallback()
    order = StepOrder(cb)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=MAX_STEPS, per_device_train_batch_size=BATCH,
                             gradient_accumulation_steps=ACCUMULATE, per_device_eval_batch_size=EVAL_BATCH,
                             report_to=[], logging_steps=1, save_strategy="no", use_cpu=True,
                             eval_strategy="steps", eval_steps=2, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(64, 1), eval_dataset=Tokens(EVAL_SAMPLES, 2),
                      callbacks=[cb, order])
    trainer.train()
    run = cb.audit

    micro_batches = MAX_STEPS * ACCUMULATE
    eval_batches = 2 * EVAL_SAMPLES // EVAL_BATCH
    # Independent count: one micro-batch of the same shapes through the counting engine.
    ids = torch.zeros(BATCH, SEQ, dtype=torch.long)
    one_step = count_step(tiny_gpt2(), {"input_ids": ids, "labels": ids})
    one_eval = count_step(tiny_gpt2().eval(), {"input_ids": ids, "labels": ids}, backward=False)
    assert run.total_flops == micro_batches * one_step.total
    assert run.eval_flops == eval_batches * one_eval.forward
    # Closed form: matmuls only, backward twice the forward.
    assert run.total_flops == 3 * micro_batches * forward_closed_form(SEQ, BATCH)
    assert run.eval_flops == eval_batches * forward_closed_form(SEQ, EVAL_BATCH)
    assert run.steps == MAX_STEPS == trainer.state.global_step
    assert run.recompute_flops == 0
    # Evaluation ran after steps 2 and 4 and only it added eval FLOPs.
    per_eval = (EVAL_SAMPLES // EVAL_BATCH) * forward_closed_form(SEQ, EVAL_BATCH)
    assert order.evals == [(2, 2, per_eval), (4, 4, 2 * per_eval)]
    # The hooks are gone after training.
    assert not model._forward_pre_hooks and not model._forward_hooks

    logged = [h for h in trainer.state.log_history if "compute_flops" in h]
    assert logged and logged[-1]["compute_flops"] == run.total_flops
    step_logs = [h for h in logged if "loss" in h]
    per_step = 3 * ACCUMULATE * forward_closed_form(SEQ, BATCH)
    assert [h["compute_flops"] for h in step_logs] == [per_step * s for s in range(1, MAX_STEPS + 1)]
    eval_logs = [h for h in logged if "eval_loss" in h]
    assert [h["compute_eval_flops"] for h in eval_logs] == [per_eval, 2 * per_eval]


def test_evaluate_alone_is_not_training(tmp_path):
    """trainer.evaluate() outside train() is not audited; train() after it counts from zero."""
    cb = AuditCallback()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=EVAL_BATCH, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens(8, 1), eval_dataset=Tokens(2, 2),
                      callbacks=[cb])
    trainer.evaluate()
    assert cb.audit is None
    trainer.train()
    assert cb.audit.total_flops == 3 * forward_closed_form(SEQ, BATCH) and cb.audit.eval_flops == 0


def test_steps_without_a_forward_of_the_watched_model_warn():
    """The model the callback was handed never ran (say it was replaced): a zero total is flagged."""
    from transformers import TrainerControl, TrainerState

    cb, state, control = AuditCallback(), TrainerState(), TrainerControl()
    cb.on_train_begin(None, state, control, model=torch.nn.Linear(2, 2))
    cb.on_pre_optimizer_step(None, state, control)
    cb.on_optimizer_step(None, state, control)
    with pytest.warns(UserWarning, match="no forward pass of the watched model"):
        cb.on_train_end(None, state, control)
    assert cb.audit.steps == 1 and cb.audit.total_flops == 0


def test_on_exceed_is_checked_when_made():
    with pytest.raises(ValueError, match="on_exceed"):
        AuditCallback(on_exceed="explode")


DDP_SCRIPT = """
import json, sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, {tests!r})
import torch.distributed as dist
from transformers import Trainer, TrainingArguments
from test_integration_hf import Tokens, tiny_gpt2
from auditor.integrations.huggingface import AuditCallback

cb = AuditCallback(run_dir={out!r} + "/run", flush_every_steps=2)
args = TrainingArguments(output_dir={out!r}, max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                         per_device_eval_batch_size=2, report_to=[], logging_steps=1, save_strategy="no", use_cpu=True,
                         eval_strategy="steps", eval_steps=2, disable_tqdm=True, ddp_backend="gloo")
trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens(64, 1), eval_dataset=Tokens(4, 2), callbacks=[cb])
trainer.train()
a = cb.audit
logs = [[h["step"], h.get("loss") is not None, h.get("eval_loss") is not None, h["compute_flops"], h["compute_eval_flops"]]
        for h in trainer.state.log_history if "compute_flops" in h]
ledger = None
if dist.get_rank() == 0:
    from auditor.record.ledger import verify_ledger
    ledger = verify_ledger({out!r} + "/run").total
with open({out!r} + f"/rank{{dist.get_rank()}}.json", "w") as fh:
    json.dump({{"world": dist.get_world_size(), "total": a.total_flops, "eval": a.eval_flops, "steps": a.steps,
               "logs": logs, "ledger": ledger}}, fh)
# Tear gloo down explicitly: left to interpreter exit, its threads sometimes abort the process
# ("terminate called without an active exception").
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_trainer_under_torchrun_two_ranks_sum(tmp_path):
    """torchrun, 2 CPU processes (gloo DDP): each rank's callback ends with the run's totals."""
    from torchrun import run_on_two_ranks

    ranks = run_on_two_ranks(tmp_path, DDP_SCRIPT, timeout=120)
    # 2 ranks x 3 steps x 2 micro-batches, each 3 forwards; an evaluation at step 2 and at the
    # end, one batch a rank each (the 4 eval samples are split between the ranks).
    per_step = 2 * ACCUMULATE * 3 * forward_closed_form(SEQ, BATCH)   # both ranks
    per_eval = 2 * forward_closed_form(SEQ, EVAL_BATCH)                # both ranks, one batch each
    for r in ranks:
        assert r["world"] == 2 and r["steps"] == 3
        assert r["total"] == 3 * per_step
        assert r["eval"] == 2 * per_eval
        # Every log, on every rank, holds the run's figures over both ranks (not this rank's half):
        # a training log after each step, an evaluation log after steps 2 and 3, the final log.
        assert [log[1:] for log in r["logs"]] == [
            [True, False, per_step, 0], [True, False, 2 * per_step, 0], [False, True, 2 * per_step, per_eval],
            [True, False, 3 * per_step, per_eval], [False, True, 3 * per_step, 2 * per_eval],
            [False, False, 3 * per_step, 2 * per_eval]]
    assert ranks[0]["logs"] == ranks[1]["logs"]
    assert ranks[0]["ledger"] == ranks[0]["logs"][-1][3] == 3 * per_step  # the ledger's figure is the log's


class LedgerAtSave(TrainerCallback):
    """After the audit's on_save, reads the ledger from disk: it must already hold that step."""

    def __init__(self, run_dir):
        self.run_dir, self.seen = run_dir, []

    def on_save(self, args, state, control, **kwargs):
        from auditor.record.ledger import read_ledger

        self.seen.append((state.global_step, read_ledger(self.run_dir).step))


def test_checkpoint_saves_find_the_ledger_at_their_step(tmp_path):
    run_dir = tmp_path / "run"
    cb = AuditCallback(run_dir=run_dir)  # default cadence: records would otherwise wait 100 steps
    at_save = LedgerAtSave(run_dir)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=BATCH,
                             report_to=[], save_strategy="steps", save_steps=2, use_cpu=True, disable_tqdm=True,
                             seed=0)
    Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens(64, 1), callbacks=[cb, at_save]).train()
    assert at_save.seen == [(2, 2), (4, 4)]
    assert cb.audit.total_flops == 4 * 3 * forward_closed_form(SEQ, BATCH)


def non_embedding_parameters():
    """GPT-2's parameters less its token and position tables, by hand: per layer two layer norms
    (2d each), qkv (3d^2 + 3d), the attention's output (d^2 + d) and the MLP (4d^2 + 4d, 4d^2 + d),
    and the final layer norm."""
    return LAYERS * (12 * D * D + 13 * D) + 2 * D


def test_trainer_dossier_breakdown_is_a_training_step_and_names_the_trainers_total_flos(tmp_path):
    from auditor.record import dossier
    from auditor.report.breakdown import breakdown_rows
    from auditor.report.views import dossier_text

    cb = AuditCallback(run_dir=tmp_path / "run", stage="pretraining")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=MAX_STEPS, per_device_train_batch_size=BATCH,
                             gradient_accumulation_steps=ACCUMULATE, per_device_eval_batch_size=EVAL_BATCH,
                             report_to=[], logging_steps=1, save_strategy="no", use_cpu=True,
                             eval_strategy="steps", eval_steps=2, disable_tqdm=True, seed=0)
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens(64, 1), eval_dataset=Tokens(EVAL_SAMPLES, 2),
                      callbacks=[cb])
    trainer.train()
    tokens = MAX_STEPS * ACCUMULATE * BATCH * SEQ
    theirs = 6 * tokens * non_embedding_parameters()        # the Trainer's floating_point_ops, summed
    assert trainer.state.total_flos == theirs
    ours = 3 * MAX_STEPS * ACCUMULATE * forward_closed_form(SEQ, BATCH)
    logged = [h for h in trainer.state.log_history if "hf_total_flos" in h]
    assert logged and logged[-1]["hf_total_flos"] == theirs and logged[-1]["compute_flops"] == ours
    assert logged[-1]["compute_flops_over_hf_total_flos"] == ours / theirs

    d = dossier.load(tmp_path / "run")
    # The evaluations at steps 2 and 4 were counted after the first step's window: the breakdown is
    # still that training step's counted call (its second micro-batch came from the cache), backward
    # twice the forward.
    ops = breakdown_rows(d, "by_op")
    assert sum(r["forward"] for r in ops) == forward_closed_form(SEQ, BATCH)
    assert sum(r["backward"] for r in ops) == 2 * forward_closed_form(SEQ, BATCH)
    breakdown = d["estimates"][0]["breakdown"]
    assert (breakdown["step"], breakdown["calls"]) == (1, 1)
    t = d["tracked"]
    assert t["reference"] == {"hf_total_flos": theirs}
    assert t["tokens"]["count"] == tokens and t["context_length"] == {"longest_seen": SEQ, "model_window": SEQ}
    embeddings = VOCAB * D + SEQ * D
    assert t["model"]["parameters"] == t["model"]["trainable_parameters"] == non_embedding_parameters() + embeddings
    assert t["model"]["class"] == "transformers.models.gpt2.modeling_gpt2.GPT2LMHeadModel"
    assert t["stage"] == "pretraining" and t["ending"] == {"how": "finished", "step": MAX_STEPS}
    assert f"the measured figure is {ours / theirs:.3f} x it" in dossier_text(d)


def test_a_trainer_run_the_guard_stops_leaves_a_dossier_that_says_so(tmp_path):
    """The guard's exception goes through Trainer.train(), which never calls on_train_end: the
    audit writes the dossier before raising."""
    from budgets import budget_rule

    from auditor.record import dossier
    from auditor.tracking import ComputeBudgetExceeded

    per_micro_batch = 3 * forward_closed_form(SEQ, BATCH)
    rule = budget_rule(tmp_path / "budget.yaml", "trainer-budget", 5 * per_micro_batch + per_micro_batch // 2)
    cb = AuditCallback(run_dir=tmp_path / "run", rules=[rule], on_exceed="stop")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=MAX_STEPS, per_device_train_batch_size=BATCH,
                             gradient_accumulation_steps=ACCUMULATE, report_to=[], logging_steps=1, save_strategy="no",
                             use_cpu=True, disable_tqdm=True, seed=0)
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=Tokens(64, 1), callbacks=[cb])
    with pytest.raises(ComputeBudgetExceeded, match="trainer-budget"):
        trainer.train()
    assert not cb.audit.running
    d = dossier.load(tmp_path / "run")
    ending = d["tracked"]["ending"]
    # 5 micro-batches fit: steps 1 and 2 (two each) and the first of step 3; its second would cross
    assert (ending["how"], ending["step"], ending["flops"]) == ("stopped", 2, 5 * per_micro_batch)
    assert d["total_flops"] == 5 * per_micro_batch
    assert d["tracked"]["reference"]["hf_total_flos"] == 6 * 4 * BATCH * SEQ * non_embedding_parameters()
