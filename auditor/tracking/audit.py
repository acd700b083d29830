"""ComputeAudit: the tracker's lifecycle (start, stop, checkpoint, watch) over its parts, and the
``audit`` decorator.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from auditor.counting.dtensor import Provenance
from auditor.counting.lengths import AffineCalls
from auditor.counting.mode import module_paths
from auditor.counting.moe import dense_expert_modules
from auditor.counting.result import StepCount
from auditor.ranks import (
    rank,
    sum_across_ranks,
    world_size,
)
from auditor.record.flush_policy import FlushPolicy, at_checkpoint
from auditor.record.run_facts import RunFacts
from auditor.tracking.calls import CallCost, Phase, _Call, _phase_name
from auditor.tracking.compiled import CompiledCalls, _holds_compiled, _holds_dtensors
from auditor.tracking.counter import Counter, _RoutedCounting
from auditor.tracking.guard import Guard
from auditor.tracking.hooks import CallHooks
from auditor.tracking.intervals import LedgerIntervals, _Interval
from auditor.tracking.ledger_sink import LedgerSink
from auditor.tracking.progress import ProgressLine
from auditor.tracking.run_dossier import RunDossier
from auditor.tracking.steps import OptimizerSteps
from auditor.tracking.totals import Totals
from auditor.tracking.windows import Windows


class ComputeAudit(Totals, Guard, LedgerIntervals, OptimizerSteps, Windows, CallHooks, Counter, CompiledCalls, RunDossier):
    """Measures training FLOPs of ``model`` (forward + backward, every call, every rank).

    ``optimizer``: anything with a ``step()`` (torch's, accelerate's, a closure-taking LBFGS, a
    plain object); a step is one optimizer step (without one: one backward pass). ``run_dir``: where
    the ledger goes (None: no ledger). ``rules``: rule ids or paths to guard against; ``on_exceed``:
    'warn' or 'stop' (raise ComputeBudgetExceeded before the call that would cross a blocking
    threshold). ``resume_step``: the checkpoint step a restarted run resumes from (the ledger rolls
    back to it). ``progress_every``: steps between progress lines (each one an interval: a record at
    least that often). ``signing_key``: an Ed25519 private key file (``auditor keys new``; default
    $AUDITOR_SIGNING_KEY) that signs the ledger's head at every flush and the dossier; its path is
    never written down. ``registry``: an auditor.registry.RunRecorder that records the ledger's
    records as they are flushed.

    ``authorization``: a reviewer's signed approval of this run's budget (``auditor authorize``),
    checked at start against ``trusted_keys`` (their NAME.pub files) and ``config`` (the training
    config it approves): a missing one where ``require_authorization``, a forged, expired or
    not-yet-valid one, or one made for another config raises auditor.AuthorizationError before
    anything runs. The budget is then a blocking limit over the phases its rules count: the run
    stops (ComputeBudgetExceeded, the ledger written) before the call that would exceed it, unless
    ``on_exceed='warn'`` says to warn (rules warn unless ``on_exceed='stop'``). The ledger's first
    record names it (its SHA-256), and the dossier shows authorized against used
    (docs/authorization.md).
    """

    def __init__(self, run_dir: str | Path | None = None, model: torch.nn.Module | None = None,
                 optimizer: Any = None, *, rules: list[str] | None = None,
                 on_exceed: str | None = None, resume_step: int | None = None, flush_every_steps: int = 100,
                 flush_every_seconds: float | None = 300.0, progress_every: int | None = None,
                 name: str | None = None, preflight: dict | None = None, signing_key: str | Path | None = None,
                 registry=None, config: str | Path | None = None, authorization: str | Path | None = None,
                 trusted_keys=(), require_authorization: bool = False, stage: str | None = None,
                 lineage: dict | None = None, operator: str | None = None, tokens: int | None = None, sinks=()):
        from auditor.tracking.sink_set import SinkSet

        self._sinks = SinkSet(sinks)         # auditor.tracking.sinks.Sink objects: MLflow, W&B, ... (docs/integrations.md)
        self._own_sinks: list = []           # made at start(): the ledger's sink, the progress line
        if on_exceed not in (None, "warn", "stop"):
            raise ValueError(f"on_exceed must be 'warn' or 'stop', got {on_exceed!r}")
        self.config, self._authorization_file = config, authorization
        self._trusted_keys, self._require_authorization = list(trusted_keys or ()), require_authorization
        self.authorization = None            # the verified Authorization the run holds (start())
        self._budget: tuple | None = None    # its limit: (name, budget, '>', phases)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.name = name or (self.run_dir.name if self.run_dir else "run")
        self.on_exceed, self.resume_step = on_exceed, resume_step
        self.flush_every_steps, self.flush_every_seconds = flush_every_steps, flush_every_seconds
        self.progress_every = progress_every
        self.preflight = preflight  # the plan's dict (auditor.preflight), shown beside the measured figure
        self._rule_ids = rules
        self.rules: list = []
        self._limits: list[tuple[str, int, str, tuple[str, ...]]] = []  # blocking rules in force: (id,
        # threshold, comparison, the phases it counts)
        self._guarded: frozenset[str] = frozenset()  # phases some blocking rule counts
        self.cache: dict[tuple, CallCost] = {}  # call key -> its cached ints
        self._unstable: set[tuple] = set()   # keys whose calls did different work: never cached
        self.train_flops = self.eval_flops = self.recompute_flops = self.optimizer_flops = 0
        self.base_flops = 0                  # carried over from a resumed ledger
        self.base_hardware = 0
        self._base_phases: dict[str, int] = {}  # a resumed ledger's evaluation and tagged phases
        self._phase_flops: dict[str, int] = {}  # tagged phases (rollout, teacher, ...): this rank's FLOPs
        self._hardware_extra = 0             # training calls' local work beyond this rank's share (TP)
        self.steps = 0                       # optimizer steps (or backward passes without one)
        self.counted_signatures = 0          # call keys counted at dispatch level
        self._handles: list = []
        self._ledger = None
        self._flush = FlushPolicy(flush_every_steps, flush_every_seconds)  # when records are made (one process)
        self._last_step_flops = 0
        self._step_cost = 0
        self._interval_flops = 0
        self._interval_extra = 0
        self._interval_phases: dict[str, int] = {}
        self._reduced = [0, 0, 0, 0]         # all ranks' training, evaluation, recomputation, hardware FLOPs so far
        self._reduced_phases: dict[str, int] = {}  # and tagged phases
        self._written_eval = self._written_recompute = 0
        self._deferred: list[_Interval] = []  # under Join: intervals kept back
        self._phase: str | None = None       # the phase ``run.phase(name)`` tags calls with now
        self._provenance = None              # tensor parallelism: counting/dtensor.py's marks, for the run
        self._decode = AffineCalls()         # calls that differ in one length (decoding steps)
        self._side_counts: dict[tuple, StepCount] = {}  # compiled call keys: their count on meta copies
        self._inner_compiled: dict = {}      # watched models holding compiled modules: themselves
        self._joining = False                # inside a Join this audit was given to
        self.uncovered: set[str] = set()
        self.optimizer_uncovered: set[str] = set()
        self._breakdown: dict = {}           # the latest window's breakdown, for the dossier
        self._warned: set[str] = set()
        self._started = False
        self._model = model
        self._optimizer = optimizer
        self._signing_key = signing_key
        self._signer = None
        self._registry = registry            # auditor.registry.RunRecorder: the ledger's on_flush (rank 0)
        self._join_config = None             # set by torch's Join when this audit is one of its joinables
        # what the dossier says was run (model, tokens, stage, hardware, energy, how it ended): record/run_facts.py
        self.facts = RunFacts(stage=stage, lineage=lineage, operator=operator, tokens=tokens, preflight=preflight,
                              registry=registry)
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        """What the hooks keep between calls: cleared at start() and stop()."""
        self._watched: dict[torch.nn.Module, dict] = {}  # model -> its module paths
        self._names: dict = {}
        self._dense: dict = {}
        self._stepper = None                 # the object whose steps are watched (None: steps are backwards)
        self._stack: list[_Call | None] = []  # the call running (None: a nested or rerun call inside it)
        self._tail: _Call | None = None      # the last call with grad: work outside the model goes to its tail
        self._position = 0                   # calls with grad since the last backward
        self._window: list[_Call] | None = None   # calls counted live; None: no window open
        self._window_grad: list[_Call] = []  # those with grad, by their first autograd node
        self._window_los: list[int] = []
        self._mode: _RoutedCounting | None = None
        self._backward_gid = None
        self._backward_seen = False
        self._backward_calls: list[_Call] = []
        self._in_step = self._measure_step = self._measure = False
        self._compiled_call = False          # a compiled call is running: no dispatch mode over it
        self._side_counting = False          # a compiled call is being counted on meta copies
        self._in_closure = 0
        self._optimizer_count = StepCount()
        self._dropped = StepCount()          # ops in a window that belong to no figure

    def start(self) -> "ComputeAudit":
        if self._started:
            return self
        from auditor.record.authorization import for_run

        # Refused before anything runs or is written: a missing, forged, expired or foreign authorization.
        self.authorization = for_run(self._authorization_file, self._trusted_keys, self.config,
                                     required=self._require_authorization)
        if self.run_dir is not None and self.resume_step is not None:
            from auditor.record.authorization import check_resumed

            check_resumed(self.run_dir, self.authorization)
        self._started = True
        self._world = world_size()
        self._read_limits()
        if self.run_dir is not None:
            from auditor.record.ledger_writer import Ledger
            from auditor.record.signing import signing_key_from
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.steps = self.resume_step or 0
            if rank() == 0:  # rank 0 writes the ledger; the others send their counts to it
                # a bad key, or one kept in the run folder, fails before the ledger opens
                self._signer = signing_key_from(self._signing_key, not_in=self.run_dir)
                # no cadence: each record is written as made; the flush policy decides when (record/flush_policy.py)
                cadence = {"signer": self._signer, "on_flush": self._registry, "meta": self._authorization_meta()}
                if self.resume_step is not None:
                    # Always through resume: a missing ledger with resume_step > 0 is an error, not a
                    # silent fresh start that would drop the compute before the checkpoint.
                    self._ledger, self.base_flops = Ledger.resume(self.run_dir, self.resume_step, **cadence)
                    kept = self._ledger.kept
                    self._base_phases = {"eval": kept.eval, **kept.phases}
                    self.base_hardware = kept.hardware
                else:
                    self._ledger = Ledger(self.run_dir, **cadence)
        if self._world > 1 and self.run_dir is not None and self.resume_step is not None:
            self.base_flops = sum_across_ranks([self.base_flops])[0]  # only rank 0 read the ledger
            import torch.distributed as dist

            carried = [self._base_phases, self.base_hardware]
            dist.broadcast_object_list(carried, src=0)
            self._base_phases, self.base_hardware = carried
        # a progress line is an interval's: in one process a record comes at least that often
        every = self.flush_every_steps       # None: no record by step count (checkpoints, time, lines, the end)
        if self.progress_every:
            every = self.progress_every if every is None else min(every, self.progress_every)
        self._flush = FlushPolicy(every, self.flush_every_seconds,
                                  [(t, c) for _, t, c, _ in self._limits], step=self.steps, total=self.total_flops)
        self._own_sinks = []                 # the ledger (rank 0) and the progress line: sinks the audit makes
        if self._ledger is not None:
            self._own_sinks.append(LedgerSink(self._ledger, self._world))
            self._sinks.add(self._own_sinks[-1], required=True)
        if self.progress_every:
            self._own_sinks.append(ProgressLine(self.progress_every, lambda: self._budget_words() + self._nearest()))
            self._sinks.add(self._own_sinks[-1])
        if self._model is not None:
            self.watch(self._model, self._optimizer)
        self.facts.begin(self._model)  # the clock and the energy meter
        self._sinks.started(self)
        return self

    def _authorization_meta(self) -> dict | None:
        """The ledger's start (or resume) record names the authorization the run holds; its bytes
        are kept beside the ledger (RUN_DIR/authorization.json) for verify."""
        if self.authorization is None:
            return None
        from auditor.files import write_atomic
        from auditor.record.authorization import RUN_COPY, ledger_meta

        write_atomic(self.run_dir / RUN_COPY, self.authorization.raw)  # the bytes that were verified
        return {"authorization": ledger_meta(self.authorization, self._budget[3])}

    def stop(self, *, failed: bool = False, error: BaseException | None = None) -> None:
        """End the audit. After an exception (``failed``; ``error``, what the sinks are told) under
        torch.distributed no collective is run, since a rank that failed alone would leave the others
        waiting forever: the ledger is flushed, not closed, and a resumed run picks it up."""
        if not self._started:
            return
        if failed and error is None:
            error = RuntimeError("the run failed")
        try:
            self._stop(failed)
        except BaseException as exc:         # the guard may stop the run at the last interval
            error = error or exc
            raise
        finally:
            # finished, stopped by the guard, or crashed: the ledger closes (a failure across ranks
            # flushes it), the dossier is written over it, then the other sinks hear of it
            try:
                self._sinks.ended(self, error, self._dossier_over_closed_ledger)
            finally:
                self._sinks.drop_own(*self._own_sinks)

    def _dossier_over_closed_ledger(self) -> None:
        if self._ledger is not None and self._ledger.closed:  # rank 0's: the sink set calls this there only
            self._write_dossier()

    def _stop(self, failed: bool) -> None:
        self._end_tail()
        self._close_window()
        self._leave_step_state()
        self._sync_mode(leaving=True)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._reset_run_state()
        self._started = False
        if failed and self._world > 1:
            return                           # no collective after a failure: the ledger sink flushes
        self._sync_all()  # the last interval, and what Join kept back (collective across ranks)
        self.facts.finish(self)  # model, hardware, energy, tokens (collective across ranks)
        if self._world > 1:
            self.train_flops, self.eval_flops, self.recompute_flops, hardware = self._reduced
            self._hardware_extra = hardware - self.train_flops
            self._phase_flops = dict(self._reduced_phases)

    def __enter__(self) -> "ComputeAudit":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.facts.failed(exc_type, self.steps)  # the dossier says how the run ended
        self.stop(failed=exc_type is not None, error=exc)

    @property
    def running(self) -> bool:
        return self._started

    def checkpoint(self) -> None:
        """Call when the training loop saves a checkpoint: the ledger records every step up to
        here and is fsynced, so a run resumed from this checkpoint neither loses nor repeats
        compute (the contract in docs/ledger.md). Collective under torch.distributed."""
        self._end_tail()
        self._close_window()
        self._write_interval()
        if self._ledger is not None:
            if self._world == 1:
                at_checkpoint(self._ledger, self.steps)
            self._ledger.flush()

    def sync(self) -> None:
        """Bring ``all_ranks_flops`` (and the ledger) up to date with every rank's counts so far.

        Under torch.distributed this is a collective: call it where every rank does (the
        callbacks call it when the framework logs). Alone, it only writes the ledger."""
        self._end_tail()
        self._write_interval()

    def watch(self, model: torch.nn.Module, optimizer: Any = None) -> None:
        """Hook one model (its top module only) and, optionally, its optimizer's step.

        Watching a model or an optimizer already watched changes nothing (a second pair of hooks
        would count every call twice)."""
        if optimizer is not None:
            self._optimizer = optimizer
        if model not in self._watched:
            self._model = model
            self._watched[model] = module_paths(model)
            self._names.update(self._watched[model])
            self._dense.update(dense_expert_modules(model))
            if _holds_compiled(model):
                self._inner_compiled[model] = model
            if self._provenance is None and _holds_dtensors(model):
                self._provenance = Provenance()  # tensor parallelism (or FSDP2): counting/dtensor.py
            before, after, arrives = self._before_forward, self._after_forward, self._gradient_arrives
            if "torch._dynamo" in sys.modules:
                # Dynamo must never trace the hooks (a module compiled in place, module.compile(),
                # compiles its hooks with it): they run eagerly, between the compiled pieces.
                disable = torch._dynamo.disable
                before, after, arrives = disable(before), disable(after), disable(arrives)
            self._handles.append(model.register_forward_pre_hook(before, with_kwargs=True))
            self._handles.append(model.register_forward_hook(after, always_call=True))
            first = next((p for p in model.parameters() if p.requires_grad), None)
            if first is not None and hasattr(first, "register_post_accumulate_grad_hook"):
                self._handles.append(first.register_post_accumulate_grad_hook(arrives))
        if optimizer is not None and self._stepper is None:
            self._watch_steps(optimizer)

    def phase(self, name: str) -> Phase:
        """``with run.phase("rollout"):``: the model's calls inside, with their backward, count to that
        phase: ``rollout``, ``synthetic_data``, ``eval``, ``reward_model``, ``teacher``, ``train`` or a
        name of your own (lowercase letters, digits and '_'). Untagged calls with grad are ``train``,
        without grad ``eval``. Each rule counts the phases its file names (``counts_phases``)."""
        return Phase(self, _phase_name(name))


def audit(run_dir: str | Path | None = None, *, model: torch.nn.Module | None = None,
          optimizer: Any = None, **options: Any) -> Callable:
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
