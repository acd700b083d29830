"""Where a tracked run's figures go: the sink protocol (as codecarbon's output handlers).

A ``ComputeAudit`` hands three events to each of its sinks: the run started, an interval was
recorded, the run ended (auditor/tracking/sink_set.py builds the events and hands them out). The
ledger (``ledger_sink.LedgerSink``) and the progress line (``progress.ProgressLine``) are sinks the
audit makes itself; the registry recorder takes the ledger's records as the ledger makes them
durable (``registry=RunRecorder(...)``), so it sits behind the ledger sink. ``ComputeAudit(sinks=[...])``
adds the user's: MLflow and Weights & Biases sinks are optional extras
(``auditor.integrations.mlflow_sink``, ``auditor.integrations.wandb_sink``).

A sink never decides anything: the guard (rules and budget) runs before the sinks see an event.
The ledger is a *required* sink: it gets each event first, and its failure stops the run (a run
whose record cannot be written must not go on). Any other sink's failure is the sink's: the audit
warns once and hands it nothing more.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Ending = Literal["finished", "stopped", "crashed"]


@dataclass(frozen=True)
class RunStarted:
    name: str                         # the run's name (the run folder's name, or the audit's)
    run_dir: str | None               # RUN_DIR, where the ledger and dossier live (None: in memory)
    rank: int
    world_size: int
    resumed_at: int | None = None     # the step a resumed run continues from
    authorization: dict | None = None  # what the ledger's first record names (sha256, budget, ...)


@dataclass(frozen=True)
class Interval:
    step: int                          # optimizer steps so far
    total_flops: int                   # the run's counted training compute so far, all ranks
    flops: int                         # this interval's share of it
    eval_flops: int = 0                # evaluation so far (counted apart, never in total_flops)
    phases: dict[str, int] = field(default_factory=dict)  # compute so far by phase (train, rollout, ...)
    budget_used: float | None = None   # share of the authorized budget used, where one is held
    # what else this interval did (the ledger's record of it holds these)
    new_phases: dict[str, int] = field(default_factory=dict)  # its evaluation and tagged phases (nonzero)
    recompute_flops: int = 0           # its recomputation (activation checkpointing): not training compute
    hardware_flops: int | None = None  # its training calls' local work where it differs from flops (TP)
    ranks: int = 1                     # the ranks whose work it sums


@dataclass(frozen=True)
class RunEnded:
    ending: Ending
    step: int
    total_flops: int
    eval_flops: int = 0
    dossier: str | None = None         # RUN_DIR/dossier.json where one was written
    why: str | None = None             # for a stop: the limit that stopped it


@runtime_checkable
class Sink(Protocol):
    def started(self, event: RunStarted) -> None: ...

    def interval(self, event: Interval) -> None: ...

    def ended(self, event: RunEnded) -> None: ...
