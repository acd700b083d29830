"""The registry: runs, plans and models with their lineage, recorded once each.

Every write is one transaction under the registry's write lock (engine.py), so a run added by
eight processes at once, or twice by the same one, is recorded once: the second finds it. A
tracked run's identity is its ledger's first record hash; a plan's, its sealed dossier digest or
the SHA-256 of its JSON. Adding a run again after its ledger grew (a resumed run closed again)
records the longer ledger, but only if it still holds the head the registry recorded: a ledger
cut back or rewritten since is refused, so the registry is the copy held elsewhere that
docs/security.md says a truncation can only be caught by.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from auditor.registry.approvals import read_document, record_holdings
from auditor.registry.approvals import record as record_approval
from auditor.registry.engine import RegistryError, open_engine, write_lock
from auditor.registry.intake import RunFacts, read_target, utc
from auditor.registry.location import resolve_url, shown
from auditor.registry.names import (
    RELATION_OF_STAGE,
    developer_name,
    model_name,
    stage_name,
    weight_text,
)
from auditor.registry.schema import RELATIONS, Edge, Model, Point, Run
from auditor.text import printable

BATCH = 5000


@dataclass
class Added:
    """What ``add`` did: ``outcome`` added | already recorded | extended | sealed (a dossier attached)."""
    outcome: str
    run_id: int
    identity: str
    model: str
    kind: str
    counted: int
    notes: list[str]

    def to_dict(self) -> dict:
        """`registry add --format json`'s contract."""
        return {"outcome": self.outcome, "run": self.identity, "model": self.model, "kind": self.kind,
                "counted_flops": self.counted, "notes": self.notes}


def now() -> datetime:
    return datetime.now(timezone.utc)


class Registry:
    """``Registry(url)``: None for $AUDITOR_REGISTRY, else the SQLite file in the user's data folder."""

    def __init__(self, url: str | None = None):
        self.url = resolve_url(url)
        self.engine = open_engine(self.url)

    def __repr__(self) -> str:
        return f"Registry({shown(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self):
        """A writing transaction under the write lock (use as ``with reg.write() as conn``)."""
        return _Writing(self.engine)

    # ------------------------------------------------------------------ adding
    def add(self, target: str | Path, *, model: str, stage: str, parent: str | Sequence[str] | None = None,
            developer: str | None = None, weight: str | Sequence[str | None] | None = None,
            trusted_keys: Iterable = (), rollouts: bool | None = None, accepted_at: datetime | None = None) -> Added:
        """Verify and record a RUN_DIR, a dossier, a ledger or a plan's JSON under ``model``.
        ``parent``: the model it comes from (a merge: a list, with ``weight`` a list beside it)."""
        model, stage, developer = model_name(model), stage_name(stage), developer_name(developer)
        parents = [parent] if isinstance(parent, str) else list(parent or [])
        weights = [weight] if weight is None or isinstance(weight, str) else list(weight)
        if parents and any(weights) and len(weights) != len(parents):
            raise RegistryError(f"--weight: got {len(weights)} weights for {len(parents)} --from models; "
                                f"expected one each")
        weights = (weights + [None] * len(parents))[:len(parents)] if parents else [w for w in weights if w]
        if not parents and (developer or weights):
            raise RegistryError(f"--{'developer' if developer else 'weight'}: says how {printable(model)} relates "
                                f"to the model it comes from; give that model with --from")
        if len(parents) > 1 and stage != "merge":
            raise RegistryError(f"--from: got {len(parents)} models; expected one, except for --stage merge")
        if any(weights) and stage != "merge":
            raise RegistryError("--weight: expected a weight only for a merge (--stage merge)")
        lineage = [(model_name(p, "--from"), weight_text(w)) for p, w in zip(parents, weights)]
        facts = read_target(Path(target), stage=stage, trusted_keys=list(trusted_keys), rollouts=rollouts,
                            known_head=self.head_of)
        if accepted_at is not None and facts.kind != "planned":
            if facts.points is not None:
                facts.points.close()
            raise RegistryError("--accepted: says when a reviewer accepted a plan; this is a tracked run, whose "
                                "times are its ledger's")
        try:
            return self.record(facts, model=model, stage=stage, parents=lineage, developer=developer,
                               accepted_at=accepted_at)
        finally:
            if facts.points is not None:
                facts.points.close()

    def link(self, model: str, parent: str, *, relation: str = "fine_tuned", developer: str | None = None,
             weight: str | None = None) -> list[str]:
        """A lineage edge without a run: ``model`` comes from ``parent``."""
        model, parent = model_name(model), model_name(parent, "--from")
        developer, weight = developer_name(developer), weight_text(weight)
        if relation not in RELATIONS:
            raise RegistryError(f"--relation: got {relation!r}; expected fine_tuned, merged or distilled")
        if weight and relation != "merged":
            raise RegistryError("--weight: expected a weight only for a merge (--relation merged)")
        with self.write() as conn:
            notes: list[str] = []
            self._link(conn, self._model_id(conn, model, notes), model, parent, relation, developer, weight, notes)
            return notes

    def record(self, facts: RunFacts, *, model: str, stage: str, parents: Sequence[tuple[str, str | None]] = (),
               developer: str | None = None, accepted_at: datetime | None = None) -> Added:
        """Record facts already read (intake.read_target) in one transaction."""
        with self.write() as conn:
            notes: list[str] = []
            model_id = self._model_id(conn, model, notes)
            for parent, weight in parents:
                self._link(conn, model_id, model, parent, RELATION_OF_STAGE.get(stage, "fine_tuned"), developer,
                           weight, notes)
            row = conn.execute(sa.select(Run).where(Run.identity == facts.identity)).mappings().first()
            if row is not None:
                added = self._again(conn, row, facts, model_id, model, stage, notes)
            else:
                values = _run_values(facts) | {"model_id": model_id, "stage": stage, "added_at": now(),
                                               "accepted_at": utc(accepted_at or now()) if facts.kind == "planned"
                                               else None}
                run_id = conn.execute(sa.insert(Run).values(**values).returning(Run.id)).scalar_one()
                self._insert_points(conn, run_id, facts)
                self._realize(conn, run_id, model_id, facts, notes)
                added = Added("added", run_id, facts.identity, model, facts.kind, facts.counted, notes + facts.notes)
            if facts.kind == "tracked":     # the authorizations its ledger names, and what it used of each
                record_holdings(conn, added.run_id, model_id, facts.authorizations, added.notes)
            return added

    def authorize(self, path: str | Path, *, model: str, trusted_keys: Iterable = ()) -> dict:
        """Record an authorization when it is issued, before any run holds it (its signature checked
        with ``trusted_keys``): `registry authorize --format json`'s contract."""
        model = model_name(model)
        facts = read_document(Path(path), list(trusted_keys))
        with self.write() as conn:
            notes: list[str] = []
            _, outcome = record_approval(conn, self._model_id(conn, model, notes), facts, notes)
        return {"outcome": outcome, "sha256": facts.sha256, "model": model, "budget_flops": facts.budget_flops,
                "approver": {"keyid": facts.approver_keyid, "name": facts.approver_name},
                "supersedes": facts.supersedes, "notes": notes}

    def _again(self, conn, row, facts: RunFacts, model_id: int, model: str, stage: str, notes) -> Added:
        """The run is recorded already: the same (nothing to do), longer, or refused."""
        if row["model_id"] != model_id or row["stage"] != stage:
            other = conn.execute(sa.select(Model.name).where(Model.id == row["model_id"])).scalar_one()
            raise RegistryError(f"--model/--stage: this {'plan' if facts.kind == 'planned' else 'run'} "
                                f"({facts.identity[:16]}) is recorded already as model {printable(other)!r}, stage "
                                f"{row['stage']}; a run belongs to one model and stage")
        added = Added("already recorded", row["id"], facts.identity, model, facts.kind, row["counted_flops"], notes)
        if facts.kind == "planned":
            return added
        if facts.ledger_head == row["ledger_head"]:
            if facts.dossier_digest and facts.dossier_digest != row["dossier_digest"]:
                conn.execute(sa.update(Run).where(Run.id == row["id"]).values(
                    dossier_digest=facts.dossier_digest, verified=facts.verified))
                added.outcome = "sealed"
            elif not row["verified"].startswith("verified") and facts.verified.startswith("verified"):
                conn.execute(sa.update(Run).where(Run.id == row["id"]).values(verified=facts.verified))
                added.outcome = "verified"
            return added
        if facts.checked_head != (row["ledger_seq"], row["ledger_head"]):
            raise RegistryError(f"{printable(facts.source)}: the registry's record of this run changed while it was "
                                f"being read (another writer): add it again")
        if not facts.held_head:
            raise RegistryError(f"refused: the registry recorded this run through record seq {row['ledger_seq']} "
                                f"(head {row['ledger_head'][:16]}...), which its ledger no longer holds: it was cut "
                                f"back or rewritten since (a resume from an earlier checkpoint does this too); the "
                                f"registry keeps what it recorded", code=1)
        conn.execute(sa.delete(Point).where(Point.run_id == row["id"]))
        conn.execute(sa.update(Run).where(Run.id == row["id"]).values(**_run_values(facts)))
        self._insert_points(conn, row["id"], facts)
        self._realize(conn, row["id"], model_id, facts, notes)
        return Added("extended", row["id"], facts.identity, model, facts.kind, facts.counted,
                     notes + [f"the ledger grew from record seq {row['ledger_seq']} to {facts.ledger_seq}"])

    def _model_id(self, conn, name: str, notes: list[str] | None = None) -> int:
        found = conn.execute(sa.select(Model.id).where(Model.name == name)).scalar()
        if found is None:
            found = conn.execute(sa.insert(Model).values(name=name, created_at=now()).returning(Model.id)).scalar_one()
            if notes is not None:
                notes.append(f"new model {printable(name)}")
        return found

    def _link(self, conn, model_id: int, model: str, parent: str, relation: str, developer: str | None,
              weight: str | None, notes: list[str]) -> None:
        if parent == model:
            raise RegistryError(f"--from: got {printable(parent)!r}; a model cannot come from itself")
        known = conn.execute(sa.select(Model.id).where(Model.name == parent)).scalar()
        parent_id = self._model_id(conn, parent)
        if known is None:
            notes.append(f"new model {printable(parent)} (no runs recorded: its compute is unknown)")
        elif model_id in _ancestors(conn, parent_id):
            raise RegistryError(f"--from: got {printable(parent)!r}; it comes from {printable(model)} already, so "
                                f"the lineage would be a cycle")
        edge = conn.execute(sa.select(Edge).where(Edge.model_id == model_id, Edge.parent_id == parent_id)
                            ).mappings().first()
        if edge is None:
            teacher = None
            if relation == "distilled":
                from auditor.registry.history import load_graph
                teacher = load_graph(conn).cumulative(parent_id)
            conn.execute(sa.insert(Edge).values(model_id=model_id, parent_id=parent_id, relation=relation,
                                                developer=developer, weight=weight, teacher_flops=teacher,
                                                created_at=now()))
            return
        said = (edge["relation"], edge["developer"], edge["weight"])
        if (relation, developer or edge["developer"], weight or edge["weight"]) != said:
            raise RegistryError(f"--from/--developer: {printable(model)} is recorded as {edge['relation']} from "
                                f"{printable(parent)} (developer {edge['developer'] or 'not stated'}"
                                f"{', weight ' + edge['weight'] if edge['weight'] else ''}); got {relation}, developer "
                                f"{developer or 'not stated'}: a lineage edge is not changed by adding a run")

    def _insert_points(self, conn, run_id: int, facts: RunFacts) -> None:
        if facts.points is None:
            return
        batch = []
        for row in facts.points.rows():
            batch.append({"run_id": run_id, **row})
            if len(batch) >= BATCH:
                conn.execute(sa.insert(Point), batch)
                batch = []
        if batch:
            conn.execute(sa.insert(Point), batch)

    def _realize(self, conn, run_id: int, model_id: int, facts: RunFacts, notes: list[str]) -> None:
        """A tracked run made from a plan (ComputeAudit(preflight=plan)) realizes it: the plan stops
        counting as foreseen compute once the run is recorded. Linked by the plan's figures."""
        if facts.plan_key is None:
            return
        if facts.kind == "tracked":
            done = conn.execute(sa.update(Run).where(Run.kind == "planned", Run.model_id == model_id,
                                                     Run.plan_key == facts.plan_key, Run.realized_by.is_(None))
                                .values(realized_by=run_id).returning(Run.identity)).scalars().all()
            notes.extend(f"realizes plan {p[:16]}" for p in done)
        else:
            run = conn.execute(sa.select(Run.id).where(Run.kind == "tracked", Run.model_id == model_id,
                                                       Run.plan_key == facts.plan_key)).scalar()
            if run is not None:
                conn.execute(sa.update(Run).where(Run.id == run_id).values(realized_by=run))
                notes.append("already realized by a recorded run")

    # ------------------------------------------------------------------ reading
    def head_of(self, identity: str) -> tuple[int, str] | None:
        """(seq, hash) of the head recorded for a tracked run, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(Run.ledger_seq, Run.ledger_head).where(Run.identity == identity)).first()
        return (row[0], row[1]) if row is not None and row[1] else None

    def graph(self, as_of: datetime | None = None):
        from auditor.registry.history import load_graph

        return load_graph(self.engine, as_of)


class _Writing:
    def __init__(self, engine):
        self._ctx = engine.begin()

    def __enter__(self):
        conn = self._ctx.__enter__()
        write_lock(conn)
        return conn

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _run_values(facts: RunFacts) -> dict:
    return {"identity": facts.identity, "kind": facts.kind, "name": facts.name, "source": facts.source,
            "total_flops": facts.total, "counted_flops": facts.counted, "rollout_flops": facts.rollouts,
            "low_flops": facts.low, "high_flops": facts.high, "dossier_digest": facts.dossier_digest,
            "ledger_head": facts.ledger_head, "ledger_seq": facts.ledger_seq, "closed": facts.closed,
            "verified": facts.verified[:300], "started_at": facts.started_at, "ended_at": facts.ended_at,
            "plan_key": facts.plan_key}


def _ancestors(conn, model_id: int) -> set[int]:
    edges = conn.execute(sa.select(Edge.model_id, Edge.parent_id)).all()
    parents: dict[int, list[int]] = {}
    for child, parent in edges:
        parents.setdefault(child, []).append(parent)
    seen, todo = set(), [model_id]
    while todo:
        for p in parents.get(todo.pop(), []):
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen
