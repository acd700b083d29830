"""Live tracking: the compute a training run uses, measured while it runs, nearly free.

One object, ``ComputeAudit``; ``audit(...)`` is a decorator over it. The model's top module
gets one forward pre-hook and one forward hook (free: no hook on every module). A step is
known by its signature: the shapes, dtypes and grad flags of the model's inputs, training
mode and grad mode. The first time a signature is met the step is counted at dispatch level
(the counting engine: forward, the loss, backward) until the next forward or optimizer step;
afterwards the cached ints are added: the forward's when the forward returns, the backward's
when the backward reaches the model's output. Variable sequence lengths, gradient accumulation
and a short last batch are new signatures, counted once each. Forward passes without grad
(evaluation) go to ``eval_flops``; recomputation (activation checkpointing) to
``recompute_flops``; neither is training compute.
"""
from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from .counting.mode import CountingMode, module_paths
from .counting.moe import dense_expert_modules
from .estimate import Estimate
from .ranks import rank, sum_across_ranks, world_size


class ComputeBudgetExceeded(RuntimeError):
    """Raised before a step that would cross a blocking threshold, with on_exceed='stop'."""


def _tensor_key(t: torch.Tensor) -> tuple:
    return t.shape, t.dtype, t.requires_grad, t.device


def _signature(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple:
    """What decides a step's FLOPs: input shapes, dtypes, grad flags, devices; training and grad mode.

    Runs on every step, so the common shapes (tensors passed positionally or by keyword) skip
    the general tree walk."""
    if all(type(a) is torch.Tensor for a in args) and all(type(v) is torch.Tensor for v in kwargs.values()):
        return (module.training, torch.is_grad_enabled(), tuple(_tensor_key(a) for a in args),
                tuple((k, _tensor_key(v)) for k, v in kwargs.items()))
    leaves, _ = tree_flatten((args, kwargs))
    shapes = tuple((tuple(t.shape), str(t.dtype), t.requires_grad, t.device.type) if isinstance(t, torch.Tensor)
                   else (type(t).__name__, t if isinstance(t, (bool, int, float, str, type(None))) else None)
                   for t in leaves)
    return module.training, torch.is_grad_enabled(), shapes


class ComputeAudit:
    """Measures training FLOPs of ``model`` (forward + backward, every step, every rank).

    ``run_dir``: where the ledger goes (None: no ledger). ``rules``: rule ids or paths to guard
    against; ``on_exceed``: 'warn' or 'stop' (raise ComputeBudgetExceeded before the step that
    would cross a blocking threshold). ``resume_step``: the checkpoint step a restarted run
    resumes from (the ledger rolls back to it). ``progress_every``: steps between progress lines.
    ``signing_key``: an Ed25519 private key file (``auditor keys new``; default $AUDITOR_SIGNING_KEY)
    that signs the ledger's head at every flush and the dossier; its path is never written down.
    ``registry``: an auditor.registry.RunRecorder that records the ledger's records as they are flushed.
    """

    def __init__(self, run_dir: str | Path | None = None, model: torch.nn.Module | None = None,
                 optimizer: torch.optim.Optimizer | None = None, *, rules: list[str] | None = None,
                 on_exceed: str = "warn", resume_step: int | None = None, flush_every_steps: int = 100,
                 flush_every_seconds: float | None = 30.0, progress_every: int | None = None,
                 name: str | None = None, preflight: dict | None = None, signing_key: str | Path | None = None,
                 registry=None):
        if on_exceed not in ("warn", "stop"):
            raise ValueError(f"on_exceed must be 'warn' or 'stop', got {on_exceed!r}")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.name = name or (self.run_dir.name if self.run_dir else "run")
        self.on_exceed, self.resume_step = on_exceed, resume_step
        self.flush_every_steps, self.flush_every_seconds = flush_every_steps, flush_every_seconds
        self.progress_every = progress_every
        self.preflight = preflight  # the plan's dict (auditor.preflight), shown beside the measured figure
        self._rule_ids = rules
        self.rules: list = []
        self._limits: list[tuple[str, int, str]] = []  # blocking rules in force: (id, threshold, comparison)
        self.cache: dict[tuple, dict[str, int]] = {}  # signature -> forward, backward, recompute
        self.train_flops = self.eval_flops = self.recompute_flops = 0
        self.base_flops = 0                  # carried over from a resumed ledger
        self.steps = 0                       # optimizer steps (or backward passes without one)
        self.counted_signatures = 0
        self._counting: tuple[tuple, CountingMode] | None = None
        self._handles: list = []
        self._ledger = None
        self._last_step_flops = 0
        self._interval_flops = 0
        self._reduced_flops = 0              # all ranks' training FLOPs, summed at each ledger interval
        self._written_eval = self._written_recompute = 0
        self.uncovered: set[str] = set()
        self._breakdown: dict = {}           # the latest counted step's breakdown, for the dossier
        self._warned: set[str] = set()
        self._started = False
        self._model = model
        self._optimizer = optimizer
        self._signing_key = signing_key
        self._signer = None
        self._registry = registry            # auditor.registry.RunRecorder: the ledger's on_flush (rank 0)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "ComputeAudit":
        if self._started:
            return self
        self._started = True
        self._world = world_size()
        if self._rule_ids:
            from .rules import evaluate, load_rules
            self.rules = load_rules(self._rule_ids)
            # The guard runs before every step: evaluating the rules there cost ~0.25 ms a step.
            # A run with no lineage meets each blocking rule in force at one whole-number
            # threshold, whatever its FLOPs, so those are read once (as of the start).
            nothing = Estimate(method="counted", flops=0, low=0, high=0)
            self._limits = [(v.rule, v.threshold_flops, v.comparison) for v in evaluate(nothing, self.rules)
                            if v.blocking and v.status != "not_in_force"]
        if self.run_dir is not None:
            from .ledger import Ledger
            from .signing import signing_key_from
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.steps = self.resume_step or 0
            if rank() == 0:  # rank 0 writes the ledger; the others send their counts to it
                # a bad key, or one kept in the run folder, fails before the ledger opens
                self._signer = signing_key_from(self._signing_key, not_in=self.run_dir)
                cadence = {"flush_every_steps": self.flush_every_steps,
                           "flush_every_seconds": self.flush_every_seconds, "signer": self._signer,
                           "on_flush": self._registry}
                if self.resume_step is not None:
                    # Always through resume: a missing ledger with resume_step > 0 is an error, not a
                    # silent fresh start that would drop the compute before the checkpoint.
                    self._ledger, self.base_flops = Ledger.resume(self.run_dir, self.resume_step, **cadence)
                else:
                    self._ledger = Ledger(self.run_dir, **cadence)
        if self._world > 1 and self.run_dir is not None and self.resume_step is not None:
            self.base_flops = sum_across_ranks([self.base_flops])[0]  # only rank 0 read the ledger
        if self._model is not None:
            self.watch(self._model, self._optimizer)
        return self

    def stop(self, *, failed: bool = False) -> None:
        """End the audit. After an exception (``failed``) under torch.distributed no collective is
        run, since a rank that failed alone would leave the others waiting forever: the ledger is
        flushed, not closed, and a resumed run picks it up."""
        if not self._started:
            return
        self._finish_counting()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._started = False
        if failed and self._world > 1:
            if self._ledger is not None:
                self._ledger.flush()
            return
        self._write_interval()  # the last interval (collective across ranks)
        self._reduce_across_ranks()
        if self._ledger is not None and rank() == 0:
            self._ledger.close(self.steps)
            self._write_dossier()

    def __enter__(self) -> "ComputeAudit":
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        self.stop(failed=exc_type is not None)

    @property
    def running(self) -> bool:
        return self._started

    def checkpoint(self) -> None:
        """Call when the training loop saves a checkpoint: the ledger records every step up to
        here and is fsynced, so a run resumed from this checkpoint neither loses nor repeats
        compute (the contract in docs/ledger.md). Collective under torch.distributed."""
        self._finish_counting()
        self._write_interval()
        if self._ledger is not None:
            self._ledger.flush()

    def watch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Hook one model (its top module only) and, optionally, its optimizer's step."""
        self._model = model
        if optimizer is not None:
            self._optimizer = optimizer
        self._names = module_paths(model)
        self._dense = dense_expert_modules(model)
        self._handles.append(model.register_forward_pre_hook(self._before_forward, with_kwargs=True))
        self._handles.append(model.register_forward_hook(self._after_forward))
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(lambda *a: self._finish_counting()))
            self._handles.append(optimizer.register_step_post_hook(lambda *a: self._end_step()))

    # ---------------------------------------------------------------- totals
    @property
    def total_flops(self) -> int:
        """Training FLOPs (forward + backward) over every step so far, resumed ledger included."""
        return self.base_flops + self.train_flops

    @property
    def estimate(self) -> Estimate:
        total = self.total_flops
        return Estimate(method="counted", flops=total, low=total, high=total, uncovered_ops=sorted(self.uncovered),
                        breakdown=dict(self._breakdown), assumptions=[
            f"measured while the run ran: {self.steps} steps, {self.counted_signatures} distinct step shapes counted "
            "at dispatch level, the rest added from those exact counts",
            "evaluation (no-grad) passes and recomputation are reported apart, not in this figure"],
            details={"eval_flops": self.eval_flops, "recompute_flops": self.recompute_flops, "steps": self.steps,
                     "resumed_from_flops": self.base_flops})

    # ---------------------------------------------------------------- hooks
    def _before_forward(self, module, args, kwargs):
        self._finish_counting()
        sig = _signature(module, args, kwargs)
        self._guard(sig)
        if sig not in self.cache:
            mode = CountingMode(module, self._dense, names=self._names)
            mode.__enter__()
            self._counting = (sig, mode)
        self._pending = sig

    def _after_forward(self, module, args, output):
        sig = self._pending
        if self._counting is not None:
            return  # counted live; the totals are taken when the window closes
        cached = self.cache[sig]
        if not sig[1]:  # no grad: evaluation
            self.eval_flops += cached["forward"]
            return
        self._add_train(cached["forward"])
        tensors = _grad_outputs(output)
        if tensors:
            fired = []

            def on_backward(_grad, cached=cached, fired=fired):
                if not fired:  # once per forward, whichever output the backward reaches first
                    fired.append(True)
                    self._add_train(cached["backward"])
                    self.recompute_flops += cached["recompute"]
                    if self._optimizer is None:
                        self._end_step()
            for t in tensors:
                t.register_hook(on_backward)

    def _finish_counting(self) -> None:
        """Close the counting window: the step's forward, loss and backward are now counted."""
        if self._counting is None:
            return
        sig, mode = self._counting
        self._counting = None
        mode.__exit__(None, None, None)
        r = mode.result
        counts = {"forward": r.forward, "backward": r.backward, "recompute": r.recompute}
        if r.forward or r.backward:
            self._breakdown = {"by_op": r.by_op(), "by_module": r.by_module(depth=3)}
        if r.uncovered:
            self.uncovered.update(r.uncovered)
            self._warn_once("uncovered", "operators without a FLOP formula met: " + ", ".join(sorted(r.uncovered)))
        if not sig[1]:
            self.eval_flops += r.forward
        else:
            self._add_train(r.forward + r.backward)
            self.recompute_flops += r.recompute
            if r.backward == 0:
                return  # no backward seen yet: count this signature again next time
            if self._optimizer is None:
                self._end_step()
        self.cache[sig] = counts
        self.counted_signatures += 1

    def _add_train(self, flops: int) -> None:
        self.train_flops += flops
        self._interval_flops += flops
        self._last_step_flops += flops

    def _end_step(self) -> None:
        self.steps += 1
        self._step_cost, self._last_step_flops = self._last_step_flops, 0
        if self._world == 1:
            if self._ledger is not None:
                self._write_interval()
        elif self.steps % self.flush_every_steps == 0:
            self._write_interval()
        if self.progress_every and self.steps % self.progress_every == 0:
            print(f"[auditor] step {self.steps}: {self.total_flops:.3e} FLOPs" + self._nearest(), file=sys.stderr)

    # ---------------------------------------------------------------- ledger, ranks, guard
    def _write_interval(self) -> None:
        """One ledger record for the FLOPs since the last; across ranks, their sum (rank 0 writes).

        Every rank reaches this at the same steps (every step alone, every flush_every_steps
        steps under torch.distributed), so the all-reduce is collective, and the guard decides
        there on figures every rank shares, so that all ranks stop at the same step."""
        flops, self._interval_flops = self._interval_flops, 0
        eval_delta, self._written_eval = self.eval_flops - self._written_eval, self.eval_flops
        recompute_delta, self._written_recompute = self.recompute_flops - self._written_recompute, self.recompute_flops
        ranks = self._world
        if ranks > 1:
            flops, eval_delta, recompute_delta = sum_across_ranks([flops, eval_delta, recompute_delta])
            self._reduced_flops += flops
            self._guard_shared(flops)
            if rank() != 0:
                return
        if self._ledger is not None and (flops or eval_delta or recompute_delta):
            self._ledger.append(self.steps, flops, eval_flops=eval_delta, recompute_flops=recompute_delta,
                                ranks=ranks)

    def _write_dossier(self) -> None:
        """RUN_DIR/dossier.json: the sealed summary, with the ledger's head and its cumulative series."""
        from . import dossier
        from .ledger import read_ledger
        from .rules import evaluate, load_rules

        state = read_ledger(self.run_dir)
        estimate = self.estimate
        verdicts = evaluate(estimate, self.rules or load_rules(None))
        total = estimate.flops
        # The ledger is the record: a resumed run's evaluation and recomputation before the resume
        # count too, as its total does (verify checks the dossier against these sums).
        eval_flops = sum(r.get("eval_flops", 0) for r in state.records)
        recompute_flops = sum(r.get("recompute_flops", 0) for r in state.records)
        tracked = {"total_flops": total, "low": total, "high": total, "estimates": [estimate.to_dict()],
                   "verdicts": [v.to_dict() for v in verdicts], "uncovered_ops": estimate.uncovered_ops,
                   "as_of": verdicts[0].as_of if verdicts else None, "eval_flops": eval_flops,
                   "recompute_flops": recompute_flops, "steps": self.steps,
                   "series": [[r["step"], r["total"]] for r in state.records],
                   "ledger": {"path": "ledger.jsonl", "head": state.head, "records": state.count}}
        dossier.write(dossier.build(self.preflight, run=self.name, tracked=tracked, signer=self._signer),
                      self.run_dir / dossier.DOSSIER_NAME)

    def _reduce_across_ranks(self) -> None:
        """At the end: every rank's counts summed (torch.distributed); each rank holds the run's totals."""
        if self._world == 1:
            return
        self.eval_flops, self.recompute_flops = sum_across_ranks([self.eval_flops, self.recompute_flops])
        self.train_flops = self._reduced_flops

    def _guard_shared(self, interval: int) -> None:
        """Under torch.distributed: stop (or warn) when another interval like the last one would
        cross a blocking threshold; the figures are the all-rank sums every rank holds."""
        if not self.rules:
            return
        total = self.base_flops + self._reduced_flops
        crossing = self._crossing(total + interval)
        if crossing:
            self._act(f"auditor: all {self._world} ranks have used {total:.3e} FLOPs; the next "
                      f"{self.flush_every_steps} steps would reach about {total + interval:.3e}, crossing {crossing}",
                      crossing)

    def _guard(self, sig: tuple) -> None:
        if not self.rules or not sig[1] or self._world > 1:  # across ranks: _guard_shared
            return
        cached = self.cache.get(sig)
        next_cost = cached["forward"] + cached["backward"] if cached else getattr(self, "_step_cost", 0)
        crossing = self._crossing(self.total_flops + next_cost)
        if crossing:
            self._act(f"auditor: the next step would take the run to about {self.total_flops + next_cost:.3e} FLOPs, "
                      f"crossing {crossing}", crossing)

    def _act(self, message: str, crossing: str) -> None:
        if self.on_exceed == "stop":
            if self._ledger is not None:
                self._ledger.flush()
            raise ComputeBudgetExceeded(message)
        self._warn_once(crossing, message)

    def _crossing(self, flops: int) -> str | None:
        """The blocking rules in force that a run of exactly ``flops`` crosses, by their comparison."""
        from .rules import passes

        failing = [rule for rule, threshold, comparison in self._limits if passes(flops, threshold, comparison)]
        return ", ".join(failing) if failing else None

    def _nearest(self) -> str:
        from .rules import passes

        flops = self.total_flops
        ahead = sorted((threshold, rule) for rule, threshold, comparison in self._limits
                       if not passes(flops, threshold, comparison))
        return f"; nearest threshold {ahead[0][1]} at {ahead[0][0]:.1e}" if ahead else ""

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)


def _grad_outputs(output: Any) -> list[torch.Tensor]:
    """The output tensors a backward can start from; shallow for a tensor or a mapping (HF)."""
    if type(output) is torch.Tensor:
        return [output] if output.requires_grad else []
    values = output.values() if hasattr(output, "values") else None
    if values is None or not all(v is None or type(v) is torch.Tensor or isinstance(v, (tuple, list)) for v in values):
        values, _ = tree_flatten(output)
    return [t for t in values if type(t) is torch.Tensor and t.requires_grad]


def audit(run_dir: str | Path | None = None, *, model: torch.nn.Module | None = None,
          optimizer: torch.optim.Optimizer | None = None, **options: Any) -> Callable:
    """Decorator: the training function runs inside a ComputeAudit.

    The function receives the audit as keyword ``audit`` if it declares it, and can call
    ``audit.watch(model, optimizer)``; else pass ``model=`` (and ``optimizer=``) here."""
    def wrap(fn: Callable) -> Callable:
        import inspect
        wants = "audit" in inspect.signature(fn).parameters

        @functools.wraps(fn)
        def run(*args, **kwargs):
            with ComputeAudit(run_dir, model, optimizer, **options) as tracker:
                if wants:
                    kwargs["audit"] = tracker
                result = fn(*args, **kwargs)
            run.last_audit = tracker
            return result
        return run
    return wrap
