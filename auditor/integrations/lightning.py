"""Lightning: a callback that audits the training compute of ``trainer.fit()``.

    from auditor.integrations.lightning import AuditCallback

    audit = AuditCallback(run_dir="runs/exp1", rules=["eu-ai-act"])
    trainer = lightning.pytorch.Trainer(..., callbacks=[audit])
    trainer.fit(module, datamodule)
    audit.audit.total_flops

Lightning calls ``training_step``, not ``forward``, and under DDP it reroutes that call through
the wrapper's ``forward`` with ``batch_idx`` among the arguments. So for the length of ``fit``
the callback routes the LightningModule's ``training_step`` (and ``validation_step``) through a
small module of its own that takes the batch alone, and watches that one: the whole step (the
forward, and any loss arithmetic such as a contrastive similarity matrix) is counted once per
batch shape, whether the step calls ``self(x)`` or ``self.net(x)``. Steps end on Lightning's
``on_before_optimizer_step`` (the gradients are complete) and ``on_train_batch_end``.
Validation (the sanity check included) runs without grad and lands in ``eval_flops``.
Manual optimization (``automatic_optimization = False``, ``manual_backward`` inside the step)
is supported too. Every ``log_every_n_steps`` optimizer steps, and at the end of ``fit``, the
trainer's loggers get ``compute_flops`` and ``compute_eval_flops``: the run's figures over every
rank (summed there, a point every rank reaches), the same as the ledger's, as Python ints.

``lightning`` is imported with this module, never by ``import auditor``.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name
    from pytorch_lightning import Callback

from auditor.integrations import AuditOptions, log_values, warn_if_nothing_seen

__all__ = ["AuditCallback"]

_MISSING = object()


class _StepModule(torch.nn.Module):
    """What ComputeAudit watches: one call per training or validation step, on the batch alone.

    The batch is the only argument, so a step's signature is its batch's shapes (plus training
    and grad mode), never ``batch_idx``. The LightningModule is a child, so module paths and
    mixture-of-experts detection see its layers."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module
        self._call = None
        self.manual = False
        self.marker: torch.Tensor | None = None

    def forward(self, batch):  # noqa: ARG002 - the step receives it through _call
        fn, args, kwargs = self._call
        self._call = None
        grad = torch.is_grad_enabled()
        out = fn(*args, **kwargs)
        if self.manual and grad:
            # The backward ran inside the step: give ComputeAudit an output whose backward it
            # can see, and run that backward (empty) right after the call (see _route).
            self.marker = torch.zeros((), requires_grad=True)
            return out, self.marker
        return out


class AuditCallback(AuditOptions, Callback):
    """Runs a ``ComputeAudit`` from ``on_fit_start`` to ``on_fit_end`` (or ``on_exception``).

    ``run_dir``, ``rules``, ``on_exceed`` and ``**options`` (``flush_every_steps``,
    ``flush_every_seconds``, ``progress_every``, ``resume_step``, ``name``) go to ComputeAudit.
    The audit starts just before the first step (``on_sanity_check_start`` or
    ``on_train_start``). By then Lightning has restored any checkpoint, whatever the strategy,
    so with a ``run_dir`` a run that starts at a nonzero ``global_step`` resumes the ledger
    there, unless ``resume_step`` is given. That covers ``fit(ckpt_path=...)`` and a second
    ``fit()`` that goes on training.

    ``audit``: the ComputeAudit of the latest ``fit()`` (None before the first).
    """

    def __init__(self, run_dir: str | Path | None = None, rules: list[str] | None = None,
                 on_exceed: str | None = None, **options: Any):
        AuditOptions.__init__(self, run_dir, rules, on_exceed, **options)
        self._restore: list[tuple[torch.nn.Module, str, Any]] = []
        self._stepped = False
        self._manual = False
        self._waiting: _StepModule | None = None  # routed; the audit starts before the first step

    # ---------------------------------------------------------------- lifecycle
    def on_fit_start(self, trainer, pl_module) -> None:
        self._finish()  # an earlier fit() that neither ended nor raised through Lightning
        step_module = _StepModule(pl_module)
        self._manual = step_module.manual = not pl_module.automatic_optimization
        self._route(pl_module, "training_step", step_module)
        if _overridden(pl_module, "validation_step"):
            self._route(pl_module, "validation_step", step_module)
        self._stepped = False
        # Strategies that restore after setup (DeepSpeed, some FSDP setups) load the checkpoint
        # after on_fit_start; every strategy has loaded it before the sanity check.
        self._waiting = step_module

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._start_waiting(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        self._start_waiting(trainer)

    def _start_waiting(self, trainer) -> None:
        if self._waiting is not None:
            step_module, self._waiting = self._waiting, None
            self._start_audit(step_module, trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # Before the checkpoint is written: the ledger records and fsyncs every step up to it.
        if self.audit is not None and self.audit.running:
            self.audit.checkpoint()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._finish()
        if self.audit is not None and trainer.loggers:
            self._log(trainer)  # the run's totals, every rank summed by stop()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._finish()

    def _finish(self) -> None:
        self._waiting = None
        for module, name, previous in reversed(self._restore):
            if previous is _MISSING:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = previous
        self._restore.clear()
        if self.audit is not None and self.audit.running:
            if self._stepped:  # the last optimizer step's batch never ended
                self._end_step()
            warn_if_nothing_seen(self.audit, self._steps_at_start, "AuditCallback")
            self.audit.stop()

    # ---------------------------------------------------------------- steps
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.audit is None or not self.audit.running:
            return
        self._stepped = True
        if not self._manual:
            # Automatic optimization: the closure's forward and backward are done, the update
            # is next. In manual optimization this hook fires inside training_step.
            self._signal.before()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._stepped and self.audit is not None and self.audit.running:
            self._end_step()
            every = trainer.log_every_n_steps
            if trainer.loggers and every and trainer.global_step % every == 0:
                self.audit.sync()  # every rank ends the same optimizer steps: the ranks are summed here
                self._log(trainer)

    def _log(self, trainer) -> None:
        if trainer.is_global_zero:
            values = log_values(self.audit)
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)

    def _end_step(self) -> None:
        self._stepped = False
        if self._manual:
            self._signal.before()
        self._signal.after()

    # ---------------------------------------------------------------- routing
    def _route(self, pl_module, name: str, step_module: _StepModule) -> None:
        """Make ``pl_module.<name>`` (looked up at each call, also under DDP) go through step_module."""
        original = getattr(pl_module, name)

        @functools.wraps(original)
        def step(*args, **kwargs):
            step_module.training = pl_module.training
            step_module._call = (original, args, kwargs)
            out = step_module(args[0] if args else kwargs.get("batch"))
            marker, step_module.marker = step_module.marker, None
            if marker is not None:
                out = out[0]
                marker.backward()  # ComputeAudit adds the step's (cached) backward here
            return out

        self._restore.append((pl_module, name, pl_module.__dict__.get(name, _MISSING)))
        pl_module.__dict__[name] = step


def _overridden(pl_module, name: str) -> bool:
    try:
        from lightning.pytorch.utilities.model_helpers import is_overridden
    except ImportError:
        from pytorch_lightning.utilities.model_helpers import is_overridden
    return is_overridden(name, pl_module)
