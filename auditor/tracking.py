"""Live tracking: the compute a training run uses, measured while it runs, nearly free.

One object, ``ComputeAudit``; ``audit(...)`` is a decorator over it. The model's top module
gets one forward pre-hook and one forward hook (free: no hook on every module), and the
optimizer's step is watched. The unit of the cache is one **call** of the model: its forward
and its own backward. A call is known by its key: the shapes, dtypes, grad flags and devices of
its inputs, training and grad mode, and its position among the calls since the last backward
(so that the first and second of a contrastive pair, which are followed by different loss
arithmetic, are told apart). The first time a key is met the calls are counted at dispatch level
(a *window*, see below); afterwards the cached ints are added: a call's forward when it returns,
its backward each time a backward reaches its outputs (a gradient hook on them; a backward over
two calls' losses reaches both, and each adds its own).

What the counter sees in a window is charged by where it comes from: ops inside a call to that
call; work outside the model with grad on after a call (the loss, a similarity matrix of two
calls' outputs) to that call's *tail*; in the backward, by the autograd node the engine runs,
whose sequence number says which call's forward (or tail) made it. Calls without grad
(evaluation) go to ``eval_flops``; recomputation (activation checkpointing) to
``recompute_flops``; the optimizer's own arithmetic (outside a closure) to ``optimizer_flops``.
None of these is training compute.
"""
from __future__ import annotations

import bisect
import functools
import json
import sys
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from auditor.counting.dtensor import Provenance, dtensor_class
from auditor.counting.lengths import AffineCalls
from auditor.counting.mode import CountingMode, module_paths
from auditor.counting.moe import dense_expert_modules
from auditor.counting.optimizer import elementwise_step
from auditor.counting.result import StepCount
from auditor.estimate import Estimate
from auditor.record.flush_policy import FlushPolicy, at_checkpoint
from auditor.record.run_facts import RunFacts
from auditor.record.step_breakdown import training_breakdown
from auditor.ranks import (
    collective_device,
    max_across_ranks,
    rank,
    sum_across_ranks,
    world_size,
)
from auditor.text import sci

_POSITIONS = 16  # calls per backward told apart by position; later ones share the last key
_UNCOUNTED_BACKWARD = "tracker: a backward of a call first seen without one"
_UNCOUNTED_COMPILED = "tracker: a call of a compiled model that the meta device could not count"
_OFF_THE_LINE = "tracker: calls predicted from a line of counted lengths that a later count left"
_UNSEEN_CALLS = "tracker: gradients from calls of the model that its hooks did not see"
_next_sequence_nr = torch._C._autograd._get_sequence_nr  # autograd nodes made so far on this thread
_queue_callback = torch.autograd.Variable._execution_engine.queue_callback


class ComputeBudgetExceeded(RuntimeError):
    """Raised before a step that would cross a blocking threshold, with on_exceed='stop'."""


def _tensor_key(t: torch.Tensor) -> tuple:
    return t.shape, t.dtype, t.requires_grad, t.device


def _signature(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple:
    """What decides a call's FLOPs: input shapes, dtypes, grad flags, devices; training and grad mode.

    Runs on every call, so the common shapes (tensors passed positionally or by keyword) skip
    the general tree walk."""
    if all(type(a) is torch.Tensor for a in args) and all(type(v) is torch.Tensor for v in kwargs.values()):
        return (module.training, torch.is_grad_enabled(), tuple(_tensor_key(a) for a in args),
                tuple((k, _tensor_key(v)) for k, v in kwargs.items()))
    leaves, _ = tree_flatten((args, kwargs))
    shapes = tuple((tuple(t.shape), str(t.dtype), t.requires_grad, t.device.type) if isinstance(t, torch.Tensor)
                   else (type(t).__name__, _opaque_state(t)) for t in leaves)
    return module.training, torch.is_grad_enabled(), shapes


def _opaque_state(value: Any) -> Any:
    """What an argument that is not a tensor tells of a call's work: a scalar as it is; a key-value
    cache (Hugging Face's Cache, which torch's pytree does not open) by the positions each layer
    holds, since attention over them grows with every decoding step; anything else nothing."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    positions = getattr(value, "get_seq_length", None)
    if callable(positions):
        try:
            return tuple(positions(i) for i in range(len(value))) if hasattr(value, "__len__") else positions()
        except Exception:  # not a cache after all: say nothing rather than fail the call
            return None
    return None


@dataclass(frozen=True)
class CallCost:
    """The cached ints of one call key.

    ``forward``: the call's own work while it ran (its forward, and any backward it ran inside,
    as a Lightning step with manual optimization does); ``tail``: work outside the model with
    grad on after the call and before the next one (the loss); ``backward``: what each backward
    that reaches the call's outputs adds (its own backward and its tail's), None when no backward
    was seen; ``recompute``: forward work rerun by that backward (checkpointing), not training.
    """

    forward: int
    forward_recompute: int
    tail: int
    backward: int | None
    recompute: int
    extra: int = 0           # under tensor parallelism: local work beyond this rank's share, forward and tail
    backward_extra: int = 0  # the same, of each backward


class Phase:
    """``with run.phase("rollout"):``: the calls made inside (and their backward, when it comes)
    belong to that phase; nested phases, the innermost. Re-entrant and reusable."""

    __slots__ = ("audit", "name", "_outer")

    def __init__(self, audit: "ComputeAudit", name: str):
        self.audit, self.name, self._outer = audit, name, []

    def __enter__(self) -> "Phase":
        self._outer.append(self.audit._phase)
        self.audit._phase = self.name
        return self

    def __exit__(self, *exc) -> None:
        self.audit._phase = self._outer.pop()


class _Call:
    """One call of a watched model; while a window counts it live, where its ops went."""

    __slots__ = ("key", "grad", "live", "gid", "step", "lo", "hi", "own", "tail", "settled", "reach_base",
                 "per_reach", "irregular", "outputs", "dead", "ref", "forward", "forward_recompute", "forward_extra",
                 "phase", "side", "__weakref__")

    def __init__(self, key: tuple, grad: bool, live: bool, step: int, phase: str, side: StepCount | None = None):
        self.key, self.grad, self.live, self.step, self.phase = key, grad, live, step, phase
        self.gid = None          # the graph task (backward) that last reached this call
        self.side = side         # a compiled call: its own work as counted on the meta device, not live
        if live:
            self.lo = _next_sequence_nr()
            self.hi = None       # set when the call returns: nodes lo <= n < hi are its own
            self.own, self.tail = StepCount(), StepCount()
            self.settled = [0] * 6  # own work, recompute, extra; tail's: charged so far
            self.reach_base = (0, 0, 0)
            self.per_reach: list[tuple[int, int, int]] = []
            self.irregular = False  # backward work came in a backward that did not reach it
            self.outputs = False
            self.dead = False
            self.ref = None


def _work(count: StepCount) -> tuple[int, int, int]:
    """(forward + backward, recompute, local work beyond the share) of a count: what it adds to a
    figure, to recomputation, and (tensor parallelism) to hardware work."""
    extra = sum(v for (phase, _, _), v in count.local_extra.items() if phase != "recompute") \
        if count.local_extra else 0
    return count.forward + count.backward, count.recompute, extra


class _RoutedCounting(CountingMode):
    """The dispatch-level counter, each op's FLOPs recorded into the count ``route()`` names."""

    def __init__(self, route: Callable[[], StepCount], names: dict, dense: dict, provenance=None,
                 in_step: Callable[[StepCount], bool] | None = None):
        super().__init__(None, dense, names=names, provenance=provenance)
        self._route = route
        self._in_step = in_step

    def _record(self, op, flops, part=None):
        self.result = self._route()
        return super()._record(op, flops, part)  # the record's key (the sparse-product check keeps it)

    def _model_work(self) -> bool:
        return self._in_step is None or not self._in_step(self._route())

    def _note_uncovered(self, name: str) -> None:
        self.result = self._route()
        super()._note_uncovered(name)

    def _note_unmodelled(self, name: str, layout) -> None:
        self.result = self._route()
        super()._note_unmodelled(name, layout)


class _JoinHook:
    """torch.distributed.algorithms.Join: the audit runs no collective while ranks may be joined,
    so there is nothing to shadow; once all ranks have joined (every rank runs post_hook) the
    counts kept back are summed."""

    def __init__(self, audit: "ComputeAudit"):
        self.audit = audit

    def main_hook(self) -> None:
        pass

    def post_hook(self, is_last_joiner: bool) -> None:
        self.audit._join_ended()


class ComputeAudit:
    """Measures training FLOPs of ``model`` (forward + backward, every call, every rank).

    ``optimizer``: anything with a ``step()`` (torch's, accelerate's, a closure-taking LBFGS, a
    plain object); a step is one optimizer step (without one: one backward pass). ``run_dir``:
    where the ledger goes (None: no ledger). ``rules``: rule ids or paths to guard against;
    ``on_exceed``: 'warn' or 'stop' (raise ComputeBudgetExceeded before the call that would cross
    a blocking threshold). ``resume_step``: the checkpoint step a restarted run resumes from (the
    ledger rolls back to it). ``progress_every``: steps between progress lines. ``signing_key``: an
    Ed25519 private key file (``auditor keys new``; default $AUDITOR_SIGNING_KEY) that signs the
    ledger's head at every flush and the dossier; its path is never written down. ``registry``: an
    auditor.registry.RunRecorder that records the ledger's records as they are flushed.

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
        from auditor.sink_set import SinkSet

        self._sinks = SinkSet(sinks)         # auditor.sinks.Sink objects: MLflow, W&B, ... (docs/integrations.md)
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

    # ---------------------------------------------------------------- lifecycle
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
        self._flush = FlushPolicy(self.flush_every_steps, self.flush_every_seconds,
                                  [(t, c) for _, t, c, _ in self._limits], step=self.steps, total=self.total_flops)
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
        try:
            self._stop(failed)
        except BaseException as exc:         # the guard may stop the run at the last interval
            error = error or exc
            raise
        finally:
            self._sinks.ended(self, error)   # finished, stopped by the guard, or crashed

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
            if self._ledger is not None:
                self._ledger.flush()
            return
        self._sync_all()  # the last interval, and what Join kept back (collective across ranks)
        self.facts.finish(self)  # model, hardware, energy, tokens (collective across ranks)
        if self._world > 1:
            self.train_flops, self.eval_flops, self.recompute_flops, hardware = self._reduced
            self._hardware_extra = hardware - self.train_flops
            self._phase_flops = dict(self._reduced_phases)
        if self._ledger is not None and rank() == 0:
            self._ledger.close(self.steps)
            self._write_dossier()

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

    # ---------------------------------------------------------------- totals
    @property
    def flops_by_phase(self) -> dict[str, int]:
        """Each phase's FLOPs as ints: ``train`` (``total_flops``), ``eval`` and every tagged phase met,
        a resumed ledger's included. Under torch.distributed, this rank's until stop()."""
        out = {"train": self.total_flops, "eval": self._base_phases.get("eval", 0) + self.eval_flops}
        for name in sorted(set(self._phase_flops) | set(self._base_phases) - {"eval"}):
            out[name] = self._base_phases.get(name, 0) + self._phase_flops.get(name, 0)
        return out

    @property
    def hardware_flops(self) -> int:
        """The local work each rank ran for the training calls (forward + backward): under tensor
        parallelism a layer left unparallelized counts once for every rank that runs it, where
        ``total_flops`` counts the model's compute once per replica. Otherwise ``total_flops``."""
        return self.base_hardware + self.train_flops + self._hardware_extra

    @property
    def total_flops(self) -> int:
        """Training FLOPs (forward + backward) over every step so far, resumed ledger included.
        Under torch.distributed, this rank's until stop() (``all_ranks_flops`` is the run's)."""
        return self.base_flops + self.train_flops

    @property
    def all_ranks_flops(self) -> int:
        """The run's training FLOPs over every rank, as of the last ``sync()`` (the ledger's total)."""
        return self.total_flops if self._world == 1 else self.base_flops + self._reduced[0]

    @property
    def all_ranks_eval_flops(self) -> int:
        return self.eval_flops if self._world == 1 else self._reduced[1]

    @property
    def estimate(self) -> Estimate:
        """The run as the rules see it: ``flops`` is training compute; ``phases`` every phase's
        figure, of which each rule compares the sum of those it counts."""
        total = self.total_flops
        details = {"eval_flops": self.eval_flops, "recompute_flops": self.recompute_flops,
                   "optimizer_flops": self.optimizer_flops, "steps": self.steps, "resumed_from_flops": self.base_flops,
                   "hardware_flops": self.hardware_flops}
        if self.optimizer_uncovered:
            details["optimizer_uncovered_ops"] = sorted(self.optimizer_uncovered)
        assumptions = [
            f"measured while the run ran: {self.steps} steps, {self.counted_signatures} distinct calls of the model "
            "counted at dispatch level, the rest added from those exact counts",
            "evaluation (no-grad) calls, recomputation and the optimizer's own arithmetic are reported apart, "
            "not in this figure; each phase's figure is in flops_by_phase, and each rule compares the sum of "
            "the phases it counts"]
        if self._decode.predicted:
            assumptions.append(self._decode.assumption())
        if self._side_counts:
            assumptions.append(f"compiled model: {len(self._side_counts)} distinct calls counted on meta copies of "
                               "the model and inputs (compiled code run eagerly there, never in the step), their "
                               "backward from every output that needs a gradient; the compiled graphs ran unobserved")
        if self._provenance is not None and self._provenance.replica is not None:
            assumptions.append(self._provenance.assumption())
        return Estimate(method="counted", flops=total, low=total, high=total, uncovered_ops=sorted(self.uncovered),
                        breakdown=dict(self._breakdown), details=details, assumptions=assumptions,
                        phases=self.flops_by_phase)

    # ---------------------------------------------------------------- calls
    def _call_key(self, module, args, kwargs, grad: bool) -> tuple:
        """What a call's cost is cached under: the module, its position among the calls since the
        last backward (a training call; evaluation calls have none), and its inputs' signature."""
        sig = _signature(module, args, kwargs)
        if not grad:
            return (id(module), None, sig)
        if self._backward_seen:  # a backward ran since the last call: a new group of calls
            self._position, self._backward_seen = 0, False
        key = (id(module), self._position if self._position < _POSITIONS else _POSITIONS, sig)
        self._position += 1
        if self._window is not None:
            self._end_tail()
            if self._window_done():
                self._close_window()
        return key

    def _known_cost(self, key: tuple, grad: bool) -> "CallCost | None":
        """The call's cost if counted before, or predicted (a decoding step, from the counted
        lengths' line); None where it must be counted."""
        cached = self.cache.get(key)
        if cached is None and not grad and key not in self._unstable:
            predicted = self._decode.predict(key)
            if predicted is not None:
                cached = self.cache[key] = CallCost(predicted, 0, 0, 0, 0)
        return cached

    def _before_forward(self, module, args, kwargs):
        if self._stack or self._side_counting or torch._C._current_graph_task_id() != -1:
            self._stack.append(None)  # inside a call, rerun by a backward, or the meta count of one
            return
        if self._joining and self._join_config.is_first_joinable:
            raise RuntimeError("ComputeAudit in Join: put the audit after the model, Join([model, audit]); Join "
                               "counts iterations by its first joinable's collectives, and the audit runs none")
        grad = torch.is_grad_enabled()
        key = self._call_key(module, args, kwargs, grad)
        phase = self._phase or ("train" if grad else "eval")
        if grad and phase == "train":
            self.facts.saw_inputs(args, kwargs)  # tokens seen, for the dossier
        cached = self._known_cost(key, grad)
        target = _compiled_target(module) or self._inner_compiled.get(module)
        side = None
        if target is not None:
            # Compiled code must run with no dispatch mode over it (Dynamo would skip the frame
            # for good): a new key is counted on meta copies first, and the counter, if a window
            # holds it on, steps aside for the call.
            self._compiled_call = True
            self._sync_mode()
            if cached is None or self._window is not None:  # counted live (a window): its own work from meta
                side = self._count_compiled(target, key, args, kwargs, grad)
                if side is None and cached is None:
                    cached = self.cache[key]
        if self._limits and phase in self._guarded:
            self._guard(cached, phase)
        live = self._window is not None or cached is None
        if live and self._window is None:
            self._window = []
        call = _Call(key, grad, live, self.steps, phase, side if live else None)
        if live:
            self._window.append(call)
            if grad:
                self._window_grad.append(call)
                self._window_los.append(call.lo)
            self._sync_mode()
        self._stack.append(call)

    def _after_forward(self, module, args, output):
        call = self._stack.pop() if self._stack else None
        if call is None:
            return
        if self._compiled_call:
            self._compiled_call = False
            self._sync_mode()
        if call.live:
            call.hi = _next_sequence_nr()
            if call.side is not None:  # compiled: its forward as counted on meta
                _add_records(call.own, call.side, ("forward",))
            self._settle(call)
            call.forward, call.forward_recompute, call.forward_extra = _work(call.own)
        elif call.grad:
            cost = self.cache[call.key]
            self._add(call.phase, cost.forward + cost.tail, cost.forward_recompute, cost.extra)
        else:
            self._add(call.phase, self.cache[call.key].forward)
        if not call.grad:
            if call.live and self._window == [call]:
                self._close_window()  # an evaluation call counted alone: nothing more to wait for
            return
        self._tail = call
        tensors = _grad_outputs(output)
        if not tensors:
            return

        def reached(_grad, call=call):
            self._reached(call)
        for t in tensors:
            t.register_hook(reached)
        if call.live:
            call.outputs = True
            # The hook lives as long as the call's graph: when it is freed, no backward can reach it.
            call.ref = weakref.ref(reached, functools.partial(_mark_dead, weakref.ref(call)))

    def _reached(self, call: _Call) -> None:
        """A backward got to one of the call's outputs: once per call and backward, its cached cost
        is added. While a window is open (or steps are backwards) the autograd engine calls
        _backward_done when this backward ends."""
        gid = torch._C._current_graph_task_id()
        if gid != self._backward_gid:
            self._backward_gid = gid
            self._backward_seen = True  # the next call starts a new group: position 0
            if self._window is not None or self._stepper is None:
                self._backward_calls = []
                _queue_callback(self._backward_done)
        if call.gid == gid:
            return
        call.gid = gid
        if call.live:
            if call.side is not None:  # compiled: its backward as counted on meta, once a backward
                _add_records(call.own, call.side, ("backward", "recompute"))
            self._backward_calls.append(call)  # measured by the window
            return
        cost = self.cache.get(call.key)
        if cost is None or cost.backward is None:
            self._uncounted_backward(call)
            return
        self._add(call.phase, cost.backward, cost.recompute, cost.backward_extra)

    def _backward_done(self) -> None:
        """The end of a backward that reached a call (an autograd engine callback): what it did
        to each call counted live, one figure per backward; without an optimizer, a step."""
        calls, self._backward_calls = self._backward_calls, []
        self._backward_gid = None
        for call in self._window_grad:  # counted live: what the backward did, as it was measured
            if call.hi is None:
                continue  # still running: a backward inside it is part of its own work
            work = _backward_work(call)
            self._settle(call)
            if call in calls:
                call.per_reach.append(tuple(a - b for a, b in zip(work, call.reach_base)))
            elif work != call.reach_base:
                call.irregular = True
            call.reach_base = work
        if self._stepper is None:
            self._end_step()

    def _count_compiled(self, target: torch.nn.Module, key: tuple, args: tuple, kwargs: dict,
                        grad: bool) -> StepCount | None:
        """A compiled call's own work, counted on meta copies (once a key); None, warned and marked
        incomplete, where the meta device cannot run it (the call still runs compiled)."""
        count = self._side_counts.get(key)
        if count is None:
            try:
                count = _count_on_meta(self, target, args, kwargs, grad)
            except Exception as exc:  # data-dependent code, an argument meta copies cannot stand for
                self.uncovered.add(_UNCOUNTED_COMPILED)
                self.cache.setdefault(key, CallCost(0, 0, 0, 0, 0))
                self._warn_once("compiled-meta", f"auditor: a call of the compiled model could not be counted on "
                                f"the meta device ({type(exc).__name__}: {str(exc)[:200]}); its FLOPs are missing "
                                "and the figure is marked incomplete")
                return None
            self._side_counts[key] = count
        return count

    def _gradient_arrives(self, param: torch.Tensor) -> None:
        """A watched model's parameter got its gradient: some backward that reached a call of it
        must be running, or the model was called where its hooks cannot see (a compiled graph of
        the original module, which bypasses the hooks on it): loud, and the figure incomplete.
        A backward inside a watched call (Lightning's manual optimization runs it inside the step
        the callback watches) is that call's own work, counted with its forward."""
        if self._side_counting or self._stack or torch._C._current_graph_task_id() == self._backward_gid:
            return
        self.uncovered.add(_UNSEEN_CALLS)
        self._warn_once("unseen", "auditor: the watched model's parameters got gradients from calls its hooks did "
                        "not see, so their FLOPs are missing (the figure is marked incomplete). A model compiled "
                        "with torch.compile must be watched as the compiled module (ComputeAudit(model=compiled)), "
                        "not as the original one, whose hooks the compiled graph bypasses")

    def _uncounted_backward(self, call: _Call) -> None:
        """A backward reached a call whose key was counted without one: it cannot be counted now
        (a counter cannot start inside a backward), so the count is marked incomplete and the key
        is counted again the next time it comes."""
        self.uncovered.add(_UNCOUNTED_BACKWARD)
        self.cache.pop(call.key, None)
        self._warn_once("uncounted", "auditor: a backward reached a call of the model whose inputs were first seen "
                        "without a backward; that backward was not counted (the figure is marked incomplete)")

    def _end_tail(self) -> None:
        """The last call's tail (the loss after it) ends here: charge what was counted of it."""
        if self._tail is not None and self._tail.live:
            self._settle(self._tail)

    # ---------------------------------------------------------------- windows
    def _window_done(self) -> bool:
        """Every call counted live has had its backward, cannot have one (no output needs a
        gradient, or its graph is gone), or a step ended since it ran."""
        return all(c.per_reach or not c.outputs or c.dead or c.step < self.steps for c in self._window_grad)

    def _close_window(self) -> None:
        if self._window is None:
            return
        window, self._window = self._window, None
        step = StepCount()
        for call in window:
            self._settle(call)
            call.live = False
            self._learn(call)
            step.records.update(call.own.records)
            step.records.update(call.tail.records)
            step.uncovered.update(call.own.uncovered)
            step.uncovered.update(call.tail.uncovered)
        self._window_grad, self._window_los = [], []
        # of the latest training step (an evaluation window has no backward): record/step_breakdown.py
        self._breakdown = training_breakdown(window) or self._breakdown
        if step.uncovered:
            self.uncovered.update(step.uncovered)
            self._warn_once("uncovered", "operators without a FLOP formula met: " + ", ".join(sorted(step.uncovered)))
        self._sync_mode()

    def _learn(self, call: _Call) -> None:
        """Cache what the window measured of the call, when it is one number per backward."""
        reaches = call.per_reach
        if call.irregular or any(r != reaches[0] for r in reaches):
            return  # not one figure per backward: the key is counted again next time
        if reaches:
            backward, recompute, backward_extra = reaches[0]
        else:  # never reached: nothing to differentiate, or no backward came (None: unknown)
            backward, recompute, backward_extra = (None, 0, 0) if call.outputs else (0, 0, 0)
        extra = call.forward_extra + _forward_extra(call.tail)
        cost = CallCost(call.forward, call.forward_recompute, call.tail.forward, backward, recompute, extra,
                        backward_extra)
        if call.key in self._unstable:
            return
        if not call.grad:
            off = self._decode.learn(call.key, call.own.records, call.own.uncovered)
            if off is not None:
                why, predicted = off
                for key in predicted:
                    self.cache.pop(key, None)
                self.uncovered.add(_OFF_THE_LINE)
                self._warn_once("off-the-line", f"auditor: {why}: the {len(predicted)} calls predicted from that line "
                                "may be off (the figure is marked incomplete); such calls are counted from now on")
        cached = self.cache.get(call.key)
        if cached is None:
            self.counted_signatures += 1
            self.cache[call.key] = cost
        elif cached.backward is None:
            self.cache[call.key] = cost
        elif cost.backward is not None and cost != cached:
            # Not what the first call with this key did: no figure can stand for both.
            self._unstable.add(call.key)
            del self.cache[call.key]
            self._warn_once("unstable", "auditor: calls of the model with the same inputs did different work "
                            f"({cached.forward + cached.tail + cached.backward:,} then "
                            f"{cost.forward + cost.tail + cost.backward:,} FLOPs); such calls are counted at "
                            "dispatch level every time")

    def _settle(self, call: _Call) -> None:
        """Charge what was counted of a live call since it was last charged."""
        if self._mode is not None and self._mode.tp is not None:
            self._mode.resolve_pending()
        now = (*_work(call.own), *_work(call.tail))
        done = call.settled
        self._add(call.phase, now[0] - done[0] + now[3] - done[3], now[1] - done[1] + now[4] - done[4],
                  now[2] - done[2] + now[5] - done[5])
        call.settled = list(now)

    def _add(self, phase: str, work: int, recompute: int = 0, extra: int = 0) -> None:
        """Work of a call (its forward, backward or tail) to its phase's figure."""
        if phase == "train":
            if work:
                self.train_flops += work
                self._interval_flops += work
                self._last_step_flops += work
            if extra:
                self._hardware_extra += extra
                self._interval_extra += extra
        elif phase == "eval":
            self.eval_flops += work
        elif work:
            self._phase_flops[phase] = self._phase_flops.get(phase, 0) + work
            self._interval_phases[phase] = self._interval_phases.get(phase, 0) + work
        self.recompute_flops += recompute

    def _route(self) -> StepCount:
        """Where the op the counter is recording now belongs."""
        if self._side_counting:  # a compiled call counted on meta: not the window's
            return self._dropped
        if torch._C._current_graph_task_id() != -1:  # a backward: the node says whose forward made it
            node = torch._C._current_autograd_node()
            if node is not None and self._window_los:
                seq = node._sequence_nr()
                i = bisect.bisect_right(self._window_los, seq) - 1
                if i >= 0:
                    call = self._window_grad[i]
                    if call.hi is None or seq < call.hi:  # a compiled call's own: counted on meta
                        return call.own if call.side is None else self._dropped
                    return call.tail
        elif self._stack:
            call = self._stack[0]
            return call.own if call.live and call.side is None else self._dropped
        if self._in_step and not self._in_closure:
            return self._optimizer_count
        if torch._C._current_graph_task_id() == -1 and torch.is_grad_enabled() and self._tail is not None \
                and self._tail.live:
            return self._tail.tail
        return self._dropped  # before the window's calls (a call added from the cache), or after a step

    def _sync_mode(self, *, leaving: bool = False) -> None:
        """Switch the dispatch-level counter on while a window is open or an optimizer step is
        measured, off otherwise. Only called outside any backward (the engine restores a graph
        task's dispatch modes for each node, so one entered or left inside would not hold)."""
        wanted = not leaving and not self._compiled_call and (
            self._window is not None or (self._measure_step and self._in_step and not self._in_closure))
        if wanted and self._mode is None:
            self._mode = _RoutedCounting(self._route, self._names, self._dense, self._provenance or False,
                                         lambda result: result is self._optimizer_count)
            self._mode.__enter__()
        elif not wanted and self._mode is not None:
            from torch.utils._python_dispatch import _get_current_dispatch_mode
            if _get_current_dispatch_mode() is not self._mode._dispatch:
                # A dispatch mode entered since sits on top: leaving ours would pop that one.
                # It stays (recording nothing) until the next point it can leave.
                if leaving:
                    self._warn_once("mode", "auditor: a dispatch mode entered during the audit is still active; "
                                    "the audit's counter stays below it")
                return
            mode, self._mode = self._mode, None
            self._provenance = mode.tp or self._provenance  # made at the first op on DTensors: kept for the run
            mode.__exit__(None, None, None)

    # ---------------------------------------------------------------- optimizer steps
    def _watch_steps(self, optimizer: Any) -> None:
        """Watch the steps of anything with a ``step()``; torch's optimizers through their step hooks
        (found inside accelerate's and other wrappers, whose own step may not be a real one)."""
        inner = _torch_optimizer(optimizer)
        if inner is not None:
            self._stepper, self._measure = inner, not elementwise_step(inner)
            self._handles.append(inner.register_step_pre_hook(self._step_pre_hook))
            self._handles.append(inner.register_step_post_hook(lambda *a: self._step_ends()))
        elif callable(getattr(optimizer, "step", None)):
            self._stepper, self._measure = optimizer, True
            self._handles.append(_StepWrapper(self, optimizer))
        elif callable(getattr(optimizer, "register_step_pre_hook", None)):  # a StepSignal (integrations)
            self._stepper, self._measure = optimizer, False
            self._handles.append(optimizer.register_step_pre_hook(lambda *a: self._step_begins()))
            self._handles.append(optimizer.register_step_post_hook(lambda *a: self._step_ends()))
        else:
            raise TypeError(f"optimizer: expected an object with a step() method, got {type(optimizer).__name__}")

    def _step_pre_hook(self, optimizer, args, kwargs):
        self._step_begins()
        if len(args) > 1 or kwargs:  # torch passes the optimizer as args[0]; a closure comes after it
            return _with_audited_closure(self, args, kwargs, at=1)
        return None

    def _step_begins(self) -> None:
        """The gradients of the step are complete: what follows is the optimizer's."""
        if self._window is not None:
            self._end_tail()
            self._close_window()
        self._tail, self._position, self._backward_seen = None, 0, False
        self._in_step, self._in_closure = True, 0
        self._measure_step = self._measure
        if self._measure or self._mode is not None:
            self._sync_mode()

    def _step_ends(self) -> None:
        self._leave_step_state()
        self._end_step()

    def _leave_step_state(self) -> None:
        if not self._in_step:
            return
        if self._window is not None:  # opened by a closure's call
            self._end_tail()
            self._close_window()
        self._in_step = self._measure_step = False
        if self._mode is not None:
            self._sync_mode()
        if not (self._optimizer_count.records or self._optimizer_count.uncovered):
            return  # nothing measured (torch's elementwise optimizers are not): no count to take
        count, self._optimizer_count = self._optimizer_count, StepCount()
        self.optimizer_flops += count.total + count.recompute
        if count.uncovered:
            self.optimizer_uncovered.update(count.uncovered)
            self._warn_once("optimizer-uncovered", "operators without a FLOP formula in the optimizer's step: "
                            + ", ".join(sorted(count.uncovered)))

    def _closure_enters(self) -> None:
        self._in_closure += 1
        self._sync_mode()

    def _closure_leaves(self) -> None:
        self._in_closure -= 1
        self._end_tail()
        self._tail = None
        self._sync_mode()

    def _end_step(self) -> None:
        self.steps += 1
        self._step_cost, self._last_step_flops = self._last_step_flops, 0
        if self._world == 1:
            if (self._ledger is not None or self._sinks) and self._flush.due(self.steps, self.total_flops):
                self._write_interval()
        elif self.steps % self.flush_every_steps == 0:
            self._write_interval()
        if self.progress_every and self.steps % self.progress_every == 0:
            print(f"[auditor] step {self.steps}: {sci(self.total_flops)} FLOPs" + self._budget_words() + self._nearest(),
                  file=sys.stderr)

    # ---------------------------------------------------------------- ledger, ranks, guard
    def _take_interval(self) -> "_Interval":
        """This rank's FLOPs since the last interval, by figure."""
        flops, self._interval_flops = self._interval_flops, 0
        extra, self._interval_extra = self._interval_extra, 0
        phases, self._interval_phases = self._interval_phases, {}
        eval_delta, self._written_eval = self.eval_flops - self._written_eval, self.eval_flops
        recompute_delta, self._written_recompute = self.recompute_flops - self._written_recompute, self.recompute_flops
        return _Interval(self.steps, flops, eval_delta, recompute_delta, flops + extra, phases)

    def _write_interval(self) -> None:
        """One ledger record for the FLOPs since the last; across ranks, their sum (rank 0 writes).

        Every rank reaches this at the same steps (every step alone, every flush_every_steps
        steps, at checkpoint() and sync() under torch.distributed), so the all-reduce is
        collective, and the guard decides there on figures every rank shares, so that all ranks
        stop at the same step. Under Join, ranks may be joined and run none of this: the counts
        are kept back until every rank has joined."""
        interval = self._take_interval()
        self._flush.written(self.steps, self.total_flops)
        if self._world > 1 and self._under_join():
            if interval:
                self._deferred.append(interval)
            self._warn_once("join", "auditor: under Join, ranks run different numbers of steps; the counts of "
                            "all ranks are summed (and the ledger written, and the guard consulted) once every "
                            "rank has joined")
            return
        if self._world > 1:
            names = self._phase_names_everywhere()
            interval = _Interval.from_vector(self.steps, sum_across_ranks(interval.vector(names)), names)
            self._accumulate(interval)
            self._guard_shared(interval)
            if rank() != 0:
                return
        self._append(interval)

    def _append(self, interval: "_Interval") -> None:
        if self._ledger is not None and interval:
            phases = {k: v for k, v in sorted(interval.phases.items()) if v}
            self._ledger.append(interval.step, interval.flops, eval_flops=interval.eval,
                                recompute_flops=interval.recompute, ranks=self._world, phases=phases or None,
                                hardware_flops=interval.hardware if interval.hardware != interval.flops else None)
        if interval:
            self._sinks.interval(self, interval.step, interval.flops)  # the ledger's record, as the sinks see it

    def _accumulate(self, interval: "_Interval") -> None:
        """An all-rank interval into the all-rank figures every rank holds."""
        self._reduced = [a + b for a, b in zip(self._reduced, interval.vector([])[:4])]
        for name, v in interval.phases.items():
            self._reduced_phases[name] = self._reduced_phases.get(name, 0) + v

    def _all_rank_phases(self) -> dict[str, int]:
        """Each phase's FLOPs over every rank, as of the last sum (a resumed ledger's included)."""
        out = {"train": self.base_flops + self._reduced[0], "eval": self._base_phases.get("eval", 0) + self._reduced[1]}
        for name in set(self._reduced_phases) | set(self._base_phases) - {"eval"}:
            out[name] = self._base_phases.get(name, 0) + self._reduced_phases.get(name, 0)
        return out

    def _phase_names_everywhere(self) -> list[str]:
        """The tagged phases any rank has met, in one order on every rank (collective)."""
        import torch.distributed as dist

        local = sorted(set(self._phase_flops) | set(self._interval_phases))
        if not max_across_ranks([len(local)])[0]:
            return []
        gathered: list = [None] * self._world
        dist.all_gather_object(gathered, local)
        return sorted(set().union(*gathered))

    def _under_join(self) -> bool:
        """In a Join this audit was given to, or watching a DistributedDataParallel model given to one."""
        if self._joining:
            return True
        return any(getattr(getattr(m, "_join_config", None), "enable", False) for m in self._watched)

    def _sync_all(self) -> None:
        """At a point every rank reaches (stop(), the end of a Join): the counts kept back and the
        last interval, summed across ranks interval by interval, written by rank 0."""
        if self._world == 1:
            self._write_interval()
            return
        interval = self._take_interval()
        if interval:
            self._deferred.append(interval)
        buckets = _flush_buckets(self._deferred, self.flush_every_steps)
        self._deferred = []
        none = 1 << 62
        last, minus_first, self.steps = max_across_ranks([max(buckets, default=0), -min(buckets, default=none),
                                                          self.steps])
        names = self._phase_names_everywhere()
        rows = [buckets.get(b, _Interval()) for b in range(-minus_first, last + 1)]
        if not rows:
            return
        steps = max_across_ranks([r.step for r in rows])
        width = len(_Interval().vector(names))
        sums = sum_across_ranks([v for r in rows for v in r.vector(names)])
        for i, step in enumerate(steps):
            interval = _Interval.from_vector(step, sums[width * i:width * (i + 1)], names)
            if not interval:
                continue
            self._accumulate(interval)
            self._guard_shared(interval)
            if rank() == 0:
                self._append(interval)

    # Joinable (torch.distributed.algorithms.join): Join([ddp_model, audit]) lets ranks step unevenly.
    def join_hook(self, **kwargs) -> _JoinHook:
        self._joining = True
        return _JoinHook(self)

    @property
    def join_device(self) -> torch.device:
        return torch.device(collective_device())

    @property
    def join_process_group(self):
        import torch.distributed as dist
        return dist.group.WORLD

    def _join_ended(self) -> None:
        self._joining = False
        self._end_tail()
        self._sync_all()

    def _write_dossier(self) -> None:
        """RUN_DIR/dossier.json: the sealed summary, with the ledger's head and its cumulative series."""
        from auditor.record import dossier
        from auditor.record.ledger import Sums, read_ledger
        from auditor.record.series import of_records
        from auditor.rules.selection import load_rules
        from auditor.rules.verdicts import evaluate

        state = read_ledger(self.run_dir)
        estimate = self.estimate
        # The ledger is the record: a resumed run's evaluation, recomputation and phases before the
        # resume count too, as its total does (verify checks the dossier against these sums), and
        # the verdicts compare the phases each rule counts as the ledger holds them.
        sums = Sums()
        for record in state.records:
            sums.add(record)
        total = estimate.flops
        estimate.phases = sums.by_phase(total)
        verdicts = evaluate(estimate.figures(), self.rules or load_rules(None))
        tracked = {"total_flops": total, "low": total, "high": total, "estimates": [estimate.to_dict()],
                   "verdicts": [v.to_dict() for v in verdicts], "uncovered_ops": estimate.uncovered_ops,
                   "as_of": verdicts[0].as_of if verdicts else None, "eval_flops": sums.eval,
                   "recompute_flops": sums.recompute, "steps": self.steps,
                   "flops_by_phase": estimate.phases, "hardware_flops": sums.hardware,
                   "series": of_records(state.records, [v.to_dict() for v in verdicts]),
                   "ledger": {"path": "ledger.jsonl", "head": state.head, "records": state.count},
                   **self.facts.dossier_fields(state.records, self.steps, self._model)}
        from auditor.record.authorization import RUN_COPY, dossier_block, named_by

        # what the ledger's latest start or resume record names: the authorization the run holds now
        held = next((n for n in map(named_by, reversed(state.records)) if n is not None), None)
        if held is not None:
            copy = self.run_dir / RUN_COPY
            envelope = json.loads(copy.read_bytes()) if copy.is_file() else None
            tracked["authorization"] = dossier_block(held, envelope, sum(estimate.phases.get(p, 0) for p in held["phases"]))
        dossier.write(dossier.build(self.preflight, run=self.name, tracked=tracked, signer=self._signer),
                      self.run_dir / dossier.DOSSIER_NAME)

    def _read_limits(self) -> None:
        """The blocking rules in force and the authorized budget, as (name, threshold, comparison,
        phases counted): what the guard checks before every call."""
        self._limits = []
        if self._rule_ids:
            from auditor.rules.selection import load_rules
            from auditor.rules.verdicts import blocking_limits
            self.rules = load_rules(self._rule_ids)
            self._limits = blocking_limits(self.rules)  # read once: the guard runs before every call
        if self.authorization is not None:
            from auditor.record.authorization import counted_phases
            from auditor.record.signing import short_id

            auth = self.authorization
            self._budget = (f"the budget authorized by {auth.approver.name} ({short_id(auth.approver.keyid)}), "
                            f"{sci(auth.budget_flops)} FLOP", auth.budget_flops, ">", counted_phases(auth))
            self._limits.append(self._budget)
        self._guarded = frozenset(p for *_, counted in self._limits for p in counted)

    def _guard_shared(self, interval: "_Interval") -> None:
        """Under torch.distributed: stop (or warn) when another interval like the last one would
        cross a blocking threshold; the figures are the all-rank sums every rank holds."""
        if not self._limits:
            return
        phases = self._all_rank_phases()
        crossing, figure = self._crossing(lambda p: phases.get(p, 0), interval.by_phase())
        if crossing:
            self._act(f"auditor: all {self._world} ranks have used {sci(phases['train'])} training FLOPs; the next "
                      f"{self.flush_every_steps} steps would reach about {sci(figure)}, crossing {crossing}",
                      crossing)

    def _guard(self, cached: CallCost | None, phase: str) -> None:
        if not self._limits or self._world > 1:  # across ranks: _guard_shared
            return
        next_cost = cached.forward + cached.tail + (cached.backward or 0) if cached else self._step_cost
        crossing, figure = self._crossing(self._phase_figure, {phase: next_cost})
        if crossing:
            self._act(f"auditor: the next call would take the run to about {sci(figure)} FLOPs, "
                      f"crossing {crossing}", crossing)

    def _act(self, message: str, crossing: str) -> None:
        """Stop (the ledger flushed first) or warn once. Rules warn unless on_exceed='stop'; the
        authorized budget stops unless on_exceed='warn'."""
        budget = self._budget is not None and self._budget[0] in crossing
        if self.on_exceed == "stop" or (budget and self.on_exceed is None):
            if self._world == 1:
                self._write_interval()  # the steps since the last record (the flush policy), then the stop
            if self._ledger is not None:
                self._ledger.flush()
            self.facts.stopped_by(crossing, self.steps, self.total_flops, message)
            stopped = ComputeBudgetExceeded(message)
            if self._world == 1:  # the dossier now, saying so: a framework may never reach stop() after this
                self.stop(error=stopped)  # the sinks hear 'stopped', not 'finished'
            raise stopped
        self._warn_once(crossing, message)

    def _phase_figure(self, phase: str) -> int:
        """One phase's figure on this rank so far (flops_by_phase[phase], without building it)."""
        if phase == "train":
            return self.total_flops
        extra = self.eval_flops if phase == "eval" else self._phase_flops.get(phase, 0)
        return self._base_phases.get(phase, 0) + extra

    def _crossing(self, phases, more: dict[str, int]) -> tuple[str | None, int]:
        """The blocking rules in force that a run of exactly these phase figures (``phases(name)``),
        plus ``more``, crosses (each rule summing the phases it counts), and the largest figure
        compared."""
        from auditor.rules.verdicts import passes

        failing, largest = [], 0
        for rule, threshold, comparison, counted in self._limits:
            figure = sum(phases(p) + more.get(p, 0) for p in counted)
            largest = max(largest, figure)
            if passes(figure, threshold, comparison):
                failing.append(rule)
        return (", ".join(failing) if failing else None), largest

    def _nearest(self) -> str:
        from auditor.rules.verdicts import passes

        ahead = sorted((threshold, rule) for rule, threshold, comparison, counted in self._limits
                       if not passes(sum(map(self._phase_figure, counted)), threshold, comparison))
        return f"; nearest threshold {ahead[0][1]} at {sci(ahead[0][0])}" if ahead else ""

    def budget_used(self) -> float | None:
        """The share of the authorized budget used so far, over every rank as of the last ``sync()``
        (None without an authorization)."""
        if self._budget is None:
            return None
        if self._world == 1:
            return sum(map(self._phase_figure, self._budget[3])) / self._budget[1]
        phases = self._all_rank_phases()
        return sum(phases.get(p, 0) for p in self._budget[3]) / self._budget[1]

    def _budget_words(self) -> str:
        share = self.budget_used()
        return "" if share is None else f"; {share:.1%} of the authorized {sci(self._budget[1])} FLOP"

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)


def _backward_work(call: _Call) -> tuple[int, int, int]:
    """A live call's backward, recomputation and local work beyond its share since it returned,
    its own and its tail's (what it ran inside its forward is in ``call.forward``: its own forward
    plus any backward in there)."""
    own, tail = call.own, call.tail
    inner_backward = call.forward - own.forward
    return (own.backward - inner_backward + tail.backward,
            own.recompute - call.forward_recompute + tail.recompute,
            _work(own)[2] - call.forward_extra + _work(tail)[2] - _forward_extra(tail))


def _phase_name(name: str) -> str:
    from auditor.rules.rule_file import phase_name  # the names rule files' counts_phases take

    try:
        return phase_name(name)
    except ValueError as exc:
        raise ValueError(f"phase: {exc}") from None


def _forward_extra(count: StepCount) -> int:
    return sum(v for (phase, _, _), v in count.local_extra.items() if phase == "forward") if count.local_extra else 0


def _add_records(into: StepCount, count: StepCount, phases: tuple[str, ...]) -> None:
    """A compiled call's records of these phases, as counted on meta, into its live count."""
    for key, v in count.records.items():
        if key[0] in phases:
            into.records[key] += v
    if "forward" in phases:
        into.uncovered.update(count.uncovered)


def _compiled_target(module: torch.nn.Module) -> torch.nn.Module | None:
    """What to count on meta for a compiled module: torch.compile's wrapper's original module, or a
    module compiled in place (``module.compile()``) itself; None for an eager module."""
    original = getattr(module, "_orig_mod", None)
    if isinstance(original, torch.nn.Module):
        return original
    return module if getattr(module, "_compiled_call_impl", None) is not None else None


def _holds_dtensors(model: torch.nn.Module) -> bool:
    dtensor = dtensor_class()
    return dtensor is not None and any(isinstance(p, dtensor) for p in model.parameters())


def _holds_compiled(model: torch.nn.Module) -> bool:
    return any(m is not model and _compiled_target(m) is not None for m in model.modules())


def _count_on_meta(audit: "ComputeAudit", target: torch.nn.Module, args: tuple, kwargs: dict,
                   grad: bool) -> StepCount:
    """One call of ``target`` on meta copies of its parameters, buffers and inputs (the same shapes,
    dtypes, strides and grad flags), with the counter there and compiled code run eagerly: its
    forward and, with grad, the backward from every output that needs a gradient. Nothing of the
    live step (the real tensors, their .grad, the compiled graphs) is touched."""
    from torch.func import functional_call

    def meta(t):
        if not isinstance(t, torch.Tensor):
            return t
        copy = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="meta")
        return copy.requires_grad_(True) if t.requires_grad else copy

    params = {n: torch.nn.Parameter(meta(p).detach(), requires_grad=p.requires_grad)
              for n, p in target.named_parameters()}
    state = {**params, **{n: meta(b) for n, b in target.named_buffers()}}
    margs, mkwargs = torch.utils._pytree.tree_map(meta, (args, kwargs))
    counter = CountingMode(target, dense_expert_modules(target))
    audit._side_counting = True
    try:
        with torch.compiler.set_stance("force_eager"), counter, torch.set_grad_enabled(grad):
            out = functional_call(target, state, margs, mkwargs)
            if grad:
                outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
                wrt = [p for p in params.values() if p.requires_grad] + [
                    t for t in tree_flatten((margs, mkwargs))[0] if isinstance(t, torch.Tensor) and t.requires_grad]
                if outs and wrt:
                    torch.autograd.grad(outs, wrt, [torch.ones_like(o) for o in outs], allow_unused=True)
    finally:
        audit._side_counting = False
    return counter.result


@dataclass
class _Interval:
    """FLOPs since the last ledger record, ending at ``step``: training, evaluation, recomputation,
    the training calls' hardware work, and each tagged phase's."""

    step: int = 0
    flops: int = 0
    eval: int = 0
    recompute: int = 0
    hardware: int = 0
    phases: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.flops or self.eval or self.recompute or self.hardware or any(self.phases.values()))

    def by_phase(self) -> dict[str, int]:
        return {"train": self.flops, "eval": self.eval, **self.phases}

    def vector(self, names: list[str]) -> list[int]:
        """The figures in a fixed order (the tagged phases in ``names``' order), to sum across ranks."""
        return [self.flops, self.eval, self.recompute, self.hardware, *(self.phases.get(n, 0) for n in names)]

    @classmethod
    def from_vector(cls, step: int, values: list[int], names: list[str]) -> "_Interval":
        return cls(step, *values[:4], dict(zip(names, values[4:])))

    def add(self, other: "_Interval") -> None:
        self.step = max(self.step, other.step)
        self.flops, self.eval = self.flops + other.flops, self.eval + other.eval
        self.recompute, self.hardware = self.recompute + other.recompute, self.hardware + other.hardware
        for name, v in other.phases.items():
            self.phases[name] = self.phases.get(name, 0) + v


def _flush_buckets(intervals: list[_Interval], every: int) -> dict[int, _Interval]:
    """Intervals gathered by flush interval (steps ((b-1)F, bF]), so that ranks that stepped
    unevenly meet: bucket -> their sum, at its last step."""
    buckets: dict[int, _Interval] = {}
    for interval in intervals:
        buckets.setdefault(-(-interval.step // max(every, 1)), _Interval(interval.step)).add(interval)
    return buckets


def _mark_dead(call_ref, _hook_ref) -> None:
    call = call_ref()
    if call is not None:
        call.dead = True


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer that really steps: the object itself, or the one a wrapper holds
    (accelerate's AcceleratedOptimizer, Lightning's LightningOptimizer), whose step hooks work."""
    seen = set()
    while optimizer is not None and id(optimizer) not in seen:
        seen.add(id(optimizer))
        if isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "_optimizer_step_pre_hooks"):
            return optimizer
        optimizer = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
    return None


def _with_audited_closure(audit: ComputeAudit, args: tuple, kwargs: dict, at: int = 0) -> tuple[tuple, dict] | None:
    """The step's arguments with its closure (``args[at]`` or ``closure=``) wrapped so that the
    forward and backward it runs (LBFGS runs it several times a step) are training compute, the
    rest optimizer work."""
    if len(args) > at and callable(args[at]):
        return (*args[:at], _audited(audit, args[at]), *args[at + 1:]), kwargs
    if callable(kwargs.get("closure")):
        return args, {**kwargs, "closure": _audited(audit, kwargs["closure"])}
    return None


def _audited(audit: ComputeAudit, closure: Callable) -> Callable:
    @functools.wraps(closure)
    def run_closure(*args, **kwargs):
        audit._closure_enters()
        try:
            return closure(*args, **kwargs)
        finally:
            audit._closure_leaves()
    return run_closure


class _StepWrapper:
    """An object's ``step`` replaced by one that tells the audit when it begins and ends; removed
    like a hook handle (left in place, and inert, if something wrapped it again since)."""

    def __init__(self, audit: ComputeAudit, stepper: Any):
        self.stepper, self.original = stepper, stepper.step
        self.had_own = "step" in getattr(stepper, "__dict__", {})
        self.active = True
        wrapper = self

        @functools.wraps(self.original)
        def step(*args, **kwargs):
            if not wrapper.active:
                return wrapper.original(*args, **kwargs)
            audit._step_begins()
            changed = _with_audited_closure(audit, args, kwargs)
            if changed is not None:
                args, kwargs = changed
            try:
                return wrapper.original(*args, **kwargs)
            finally:
                audit._step_ends()
        self.step = step
        try:
            stepper.step = step
        except (AttributeError, TypeError):
            raise TypeError(f"optimizer: cannot watch the step of a {type(stepper).__name__} "
                            "(its step method cannot be replaced)") from None

    def remove(self) -> None:
        self.active = False
        if getattr(self.stepper, "__dict__", {}).get("step") is self.step:
            if self.had_own:
                self.stepper.step = self.original
            else:
                del self.stepper.step


def _grad_outputs(output: Any) -> list[torch.Tensor]:
    """The output tensors a backward can start from; shallow for a tensor or a mapping (HF)."""
    if type(output) is torch.Tensor:
        return [output] if output.requires_grad else []
    values = output.values() if hasattr(output, "values") else None
    if values is None or not all(v is None or type(v) is torch.Tensor or isinstance(v, (tuple, list)) for v in values):
        values, _ = tree_flatten(output)
    return [t for t in values if type(t) is torch.Tensor and t.requires_grad]


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
