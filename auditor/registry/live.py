"""Live recording: a run's ledger records go into the registry as they are flushed.

``ComputeAudit(..., registry=RunRecorder(URL, model="m", stage="pretraining"))`` (or
``Ledger(run_dir, on_flush=recorder)``): after each flush has made records durable in the
ledger, the recorder writes them to the registry. The ledger stays the record: a registry that
cannot be reached never stops training or loses a record; the recorder warns once, keeps what it
could not write and tries again at the next flush, and ``auditor registry add RUN_DIR`` later
verifies the run and fills in anything missing. Records written live are marked so: they were
not verified on the way in (the writer is the training process itself).
"""
from __future__ import annotations

import json
import warnings

import sqlalchemy as sa

from auditor.registry.engine import RegistryError
from auditor.registry.intake import ROLLOUT_STAGES, parse_time
from auditor.registry.names import (
    RELATION_OF_STAGE,
    developer_name,
    model_name,
    stage_name,
)
from auditor.registry.schema import Point, Run
from auditor.registry.store import Registry, now

LIVE = "recorded live by the training process, not verified (auditor registry add RUN_DIR verifies it)"
MAX_PENDING = 100_000   # records kept for a registry that is down; past that, `registry add` fills the gap


class RunRecorder:
    """Takes a ledger's records as they are flushed: ``recorder(ledger, records)``."""

    def __init__(self, registry: Registry | str | None = None, *, model: str, stage: str, parent: str | None = None,
                 developer: str | None = None, rollouts: bool | None = None):
        self.model, self.stage = model_name(model), stage_name(stage)
        self.parent = model_name(parent, "--from") if parent is not None else None
        self.developer = developer_name(developer)
        self.rollouts = stage in ROLLOUT_STAGES if rollouts is None else rollouts
        self._registry = registry if isinstance(registry, Registry) else None
        self._url = None if isinstance(registry, Registry) else registry
        self._pending: list[dict] = []
        self._identity: str | None = None
        self._gave_up, self._warned = False, False

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self._url)
        return self._registry

    def __call__(self, ledger, records: list[dict]) -> None:
        if self._gave_up:
            return
        self._pending.extend(records)
        try:
            self._write(ledger)
            self._pending = []
        except Exception as exc:           # the ledger has every record: never stop training for the registry
            if len(self._pending) > MAX_PENDING:
                self._gave_up, self._pending = True, []
            if not self._warned or self._gave_up:
                self._warned = True
                warnings.warn(f"registry: could not record {ledger.path}'s records "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); the ledger keeps them: "
                              f"add the run later with auditor registry add {ledger.run_dir}", RuntimeWarning,
                              stacklevel=2)

    def _write(self, ledger) -> None:
        if self._identity is None:
            with open(ledger.path, "rb") as fh:
                first = json.loads(fh.readline())
            self._identity, self._first = first["hash"], first
        registry = self.registry
        with registry.write() as conn:
            notes: list[str] = []
            model_id = registry._model_id(conn, self.model, notes)
            if self.parent is not None:
                registry._link(conn, model_id, self.model, self.parent, RELATION_OF_STAGE.get(self.stage, "fine_tuned"),
                               self.developer, None, notes)
            row = conn.execute(sa.select(Run).where(Run.identity == self._identity)).mappings().first()
            if row is None:
                name = (self._first.get("meta") or {}).get("run") or ledger.run_dir.name
                run_id = conn.execute(sa.insert(Run).values(
                    identity=self._identity, kind="tracked", model_id=model_id, stage=self.stage, name=str(name)[:200],
                    source=str(ledger.run_dir)[:1000], total_flops=0, counted_flops=0, rollout_flops=0, low_flops=0,
                    high_flops=0, closed=False, verified=LIVE, started_at=parse_time(self._first["time"]),
                    added_at=now()).returning(Run.id)).scalar_one()
                seq, rollouts = -1, 0
            else:
                if row["model_id"] != model_id or row["stage"] != self.stage:
                    raise RegistryError("this run is recorded already under another model or stage")
                run_id, seq, rollouts = row["id"], row["ledger_seq"], row["rollout_flops"]
            rows, last = [], None
            for rec in self._pending:
                if seq is not None and rec["seq"] <= seq:     # a resume rolled records back: forget them
                    conn.execute(sa.delete(Point).where(Point.run_id == run_id, Point.seq >= rec["seq"]))
                    rows = [r for r in rows if r["seq"] < rec["seq"]]
                    before = conn.execute(sa.select(Point.counted).where(Point.run_id == run_id)
                                          .order_by(Point.seq.desc()).limit(1)).scalar()
                    kept = [r["counted"] for r in rows]
                    counted_before = kept[-1] if kept else before
                    rollouts = (counted_before or 0) - rec["total"] if rec["kind"] == "resume" else 0
                rollouts += rec.get("eval_flops", 0) if self.rollouts else 0
                rows.append({"run_id": run_id, "seq": rec["seq"], "time": parse_time(rec["time"]),
                             "step": rec["step"], "counted": rec["total"] + rollouts})
                seq, last = rec["seq"], rec
            if rows:
                conn.execute(sa.insert(Point), rows)
            if last is not None:
                counted = last["total"] + rollouts
                conn.execute(sa.update(Run).where(Run.id == run_id).values(
                    total_flops=last["total"], counted_flops=counted, rollout_flops=rollouts, low_flops=counted,
                    high_flops=counted, ledger_head=last["hash"], ledger_seq=last["seq"],
                    closed=last["kind"] == "close", ended_at=parse_time(last["time"])))
