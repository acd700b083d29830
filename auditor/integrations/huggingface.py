"""``transformers.Trainer``: a callback that audits the training compute of ``trainer.train()``.

    from auditor.integrations.huggingface import AuditCallback

    audit = AuditCallback(run_dir="runs/exp1", rules=["eu-ai-act"])
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[audit])
    trainer.train()
    audit.audit.total_flops        # forward + backward, every micro-batch, every rank

The top module of the Trainer's model gets one forward pre-hook and one forward hook (see
``auditor.tracking``). Steps are delimited by the Trainer's own ``on_pre_optimizer_step`` and
``on_optimizer_step`` events, not by hooks on the optimizer: accelerate wraps it in an
AcceleratedOptimizer, which skips torch's step hooks, and a GradScaler may skip the inner step.
Gradient accumulation is exact (each micro-batch's forward and backward is counted; a step is
one optimizer step); evaluation inside ``train()`` runs without grad and lands in
``eval_flops``. Each log gets ``compute_flops`` and ``compute_eval_flops``: the run's figures
over every rank, the same as the ledger's (under DDP the callback sums the ranks when the
Trainer logs, which every rank does: the Trainer gathers the loss there too). Beside them,
``hf_total_flos`` (the Trainer's own ``state.total_flos``: 6 x non-embedding parameters x input
tokens, its estimate) and ``compute_flops_over_hf_total_flos`` (ours over it), which the run's
dossier repeats (tracked.reference).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from auditor.integrations import AuditOptions, log_values, warn_if_nothing_seen

__all__ = ["AuditCallback"]

LOG_KEYS = ("compute_flops", "compute_eval_flops", "compute_budget_used", "hf_total_flos",
            "compute_flops_over_hf_total_flos")


class AuditCallback(AuditOptions, TrainerCallback):
    """Runs a ``ComputeAudit`` from ``on_train_begin`` to ``on_train_end``.

    ``run_dir``, ``rules``, ``on_exceed`` and ``**options`` (``flush_every_steps``,
    ``flush_every_seconds``, ``progress_every``, ``resume_step``, ``name``) go to ComputeAudit.
    With a ``run_dir``, a Trainer resumed from a checkpoint resumes the ledger at the
    checkpoint's step unless ``resume_step`` is given.

    ``audit``: the ComputeAudit of the latest ``train()`` (None before the first).
    """

    def __init__(self, run_dir: str | Path | None = None, rules: list[str] | None = None,
                 on_exceed: str | None = None, **options: Any):
        AuditOptions.__init__(self, run_dir, rules, on_exceed, **options)

    @property
    def _running(self) -> bool:
        return self.audit is not None and self.audit.running

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("AuditCallback: the Trainer passed no model to on_train_begin")
        if self._running:  # an earlier train() raised before on_train_end
            self.audit.stop()
        self._start_audit(model, state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self._running:
            self._signal.before()

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self._running:
            self._signal.after()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.audit is None or logs is None:
            return
        if self._running:
            self.audit.sync()  # every rank logs here: the ranks' counts are summed, the ledger written
        values = {**log_values(self.audit), **self._reference(state)}
        # Trainer.log appends a copy of the logs to the history just before calling on_log.
        history = state.log_history[-1] if state.log_history else None
        if history is not None and history.get("step") == state.global_step and all(
                history.get(k) == v for k, v in logs.items() if k not in LOG_KEYS):
            history.update(values)
        logs.update(values)

    def on_save(self, args, state, control, **kwargs):
        # The Trainer calls this just after writing a checkpoint: the ledger records and fsyncs
        # every step up to it, so a run resumed from it neither loses nor repeats compute.
        if self._running:
            self.audit.checkpoint()

    def _reference(self, state) -> dict:
        """The Trainer's own figure beside ours; the dossier gets it too (its last value before stop)."""
        theirs = int(state.total_flos or 0)
        self.audit.facts.reference = {"hf_total_flos": theirs}
        ratio = self.audit.all_ranks_flops / theirs if theirs else None
        return {"hf_total_flos": theirs, **({"compute_flops_over_hf_total_flos": ratio} if ratio else {})}

    def on_train_end(self, args, state, control, **kwargs):
        if self._running:
            self._reference(state)
            warn_if_nothing_seen(self.audit, self._steps_at_start, "AuditCallback")
            self.audit.stop()
