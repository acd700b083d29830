"""A model's compute history: the lineage graph, its figures under each basis, and the moment a
cumulative sum passed a threshold.

Figures are (low, central, high) triples of ints: a tracked run's are its counted compute three
times (measured, no range), a plan's its preflight range. Which runs add up depends on the basis:

- ``training``: the model's own runs (its stages), none of its ancestors';
- ``cumulative``: its own runs plus, through every edge whose developer is the same (or not
  stated: added, conservatively), its ancestors' cumulative compute; an edge to another
  developer's model adds nothing (that compute is the other developer's). A merge adds each
  merged model's whole compute (the training behind merged weights counts; weights are kept for
  the record, not used to scale). A distillation teacher's compute is recorded on its edge and
  added only under a rule that says ``counts_teacher: true``;
- ``ratio_to_base``: the modification, the runs of the model and of its ancestors reached through
  same-developer edges, against the compute of the base models across an edge to another (or an
  unstated) developer.

A moment of crossing comes from the ledgers' timestamps: the points of every run that adds up,
merged in time order, summed, and the first point where the sum passes the threshold by the
rule's own comparison; the interval is from the point before it. Foreseen: the same, with each
plan's high end added from when it was accepted until the run that realizes it started.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction

import sqlalchemy as sa

from auditor.registry.intake import utc
from auditor.registry.schema import Edge, Model, Point, Run
from auditor.rules.verdicts import passes

Triple = tuple[int, int, int]
ZERO: Triple = (0, 0, 0)


def add(a: Triple, b: Triple) -> Triple:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


@dataclass
class RunNode:
    id: int
    identity: str
    kind: str
    model_id: int
    stage: str
    name: str
    source: str | None
    total: int                   # the ledger's training total (a plan: central), at the cutoff
    counted: int                 # training + rollouts, at the cutoff
    rollouts: int
    low: int
    high: int
    verified: str
    closed: bool
    started_at: datetime | None
    ended_at: datetime | None
    accepted_at: datetime | None
    realized_by: int | None
    dossier_digest: str | None
    ledger_head: str | None
    partial: bool = False        # a tracked run still going at the cutoff: its figure there

    @property
    def figure(self) -> Triple:
        return (self.counted,) * 3 if self.kind == "tracked" else (self.low, self.counted, self.high)


@dataclass
class EdgeNode:
    model_id: int
    parent_id: int
    relation: str
    developer: str | None
    weight: str | None
    teacher_flops: int | None


@dataclass
class Graph:
    """Everything but the points, as of a cutoff (None: everything recorded)."""
    engine_or_conn: object
    cutoff: datetime | None
    names: dict[int, str] = field(default_factory=dict)
    parents: dict[int, list[EdgeNode]] = field(default_factory=dict)
    children: dict[int, list[EdgeNode]] = field(default_factory=dict)
    runs: dict[int, RunNode] = field(default_factory=dict)
    runs_of: dict[int, list[RunNode]] = field(default_factory=dict)
    _passing: dict = field(default_factory=dict)    # sweeps already made: rules that share a threshold share one

    def id_of(self, name: str) -> int | None:
        return next((i for i, n in self.names.items() if n == name), None)

    # ------------------------------------------------------------------ which runs add up
    def tracked(self, model_id: int) -> list[RunNode]:
        return [r for r in self.runs_of.get(model_id, []) if r.kind == "tracked"]

    def open_plans(self, model_id: int) -> list[RunNode]:
        """Plans not yet realized at the cutoff (their run had not started by then)."""
        out = []
        for r in self.runs_of.get(model_id, []):
            if r.kind != "planned":
                continue
            realizer = self.runs.get(r.realized_by) if r.realized_by else None
            if realizer is None:
                out.append(r)
        return out

    def inherited(self, model_id: int, teacher: bool = False) -> list[EdgeNode]:
        """The edges whose parents' compute this model's cumulative compute adds."""
        return [e for e in self.parents.get(model_id, []) if e.developer != "other"
                and (e.relation != "distilled" or teacher)]

    def closure(self, model_id: int, teacher: bool = False) -> list[int]:
        """The model and every ancestor whose compute its cumulative compute adds (each once)."""
        seen, todo = [model_id], [model_id]
        while todo:
            for e in self.inherited(todo.pop(), teacher):
                if e.parent_id not in seen:
                    seen.append(e.parent_id)
                    todo.append(e.parent_id)
        return seen

    def modification(self, model_id: int) -> tuple[list[int], list[EdgeNode]]:
        """(the models whose runs make the modification, the edges to base models of another or an
        unstated developer). Distillation is not a modification of its teacher."""
        mods, bases, todo = [model_id], [], [model_id]
        while todo:
            for e in self.parents.get(todo.pop(), []):
                if e.relation == "distilled":
                    continue
                if e.developer == "same":
                    if e.parent_id not in mods:
                        mods.append(e.parent_id)
                        todo.append(e.parent_id)
                elif all(b.parent_id != e.parent_id for b in bases):
                    bases.append(e)
        return mods, bases

    # ------------------------------------------------------------------ figures
    def own(self, model_id: int, foreseen: bool = False) -> Triple:
        total = ZERO
        for r in self.tracked(model_id) + (self.open_plans(model_id) if foreseen else []):
            total = add(total, r.figure)
        return total

    def known(self, model_id: int, teacher: bool = False) -> bool:
        """Whether anything is recorded for a model's compute: a run of it or of an ancestor it adds."""
        return any(self.runs_of.get(m) for m in self.closure(model_id, teacher))

    def sum_of(self, models: Iterable[int], foreseen: bool = False) -> Triple:
        total = ZERO
        for m in models:
            total = add(total, self.own(m, foreseen))
        return total

    def cumulative(self, model_id: int, teacher: bool = False, foreseen: bool = False) -> int | None:
        """The central cumulative figure, or None when nothing is recorded for it."""
        if not self.known(model_id, teacher):
            return None
        return self.sum_of(self.closure(model_id, teacher), foreseen)[1]

    def runs_in(self, models: Iterable[int]) -> list[int]:
        return [r.id for m in models for r in self.tracked(m)]

    def plans_in(self, models: Iterable[int]) -> list[RunNode]:
        return [p for m in models for p in self.open_plans(m)]

    # ------------------------------------------------------------------ when
    def first_passing(self, models: list[int], threshold: Fraction, comparison: str, *,
                      foreseen: bool = False) -> tuple[datetime | None, datetime] | None:
        """(the point before, the point at which) the models' summed compute first passes the
        threshold; with ``foreseen``, plans' high ends count from their acceptance until their run
        starts. None when it never does by the cutoff."""
        foreseen = foreseen and bool(self.plans_in(models) + self._realized_plans(models))   # else the same sweep
        key = (tuple(sorted(set(models))), threshold, comparison, foreseen)
        if key not in self._passing:
            self._passing[key] = self._first_passing(models, threshold, comparison, foreseen)
        return self._passing[key]

    def _first_passing(self, models, threshold, comparison, foreseen):
        run_ids = self.runs_in(models)
        events = []
        if foreseen:
            for plan in self.plans_in(models) + self._realized_plans(models):
                start = utc(plan.accepted_at)
                realizer = self.runs.get(plan.realized_by) if plan.realized_by else None
                end = utc(realizer.started_at) if realizer is not None and realizer.started_at else None
                if end is not None and end <= start:
                    continue
                events.append((start, 1, plan.high))
                if end is not None:
                    events.append((end, 0, -plan.high))
            events.sort()
        points = self._points(run_ids)
        current: dict[int, int] = {}
        actual, planned, before = 0, 0, None
        stream = heapq.merge(((t, 2, run, counted) for t, run, counted in points),
                             ((t, order, None, delta) for t, order, delta in events), key=lambda e: (e[0], e[1]))
        for when, _order, run, value in stream:
            if run is not None:
                actual += value - current.get(run, 0)
                current[run] = value
            else:
                planned += value
            if passes(actual + planned, threshold, comparison):
                return before, when
            before = when
        return None

    def _realized_plans(self, models: Iterable[int]) -> list[RunNode]:
        return [r for m in models for r in self.runs_of.get(m, []) if r.kind == "planned" and r.realized_by]

    def _points(self, run_ids: list[int]):
        if not run_ids:
            return iter(())
        query = sa.select(Point.time, Point.run_id, Point.counted).where(Point.run_id.in_(run_ids))
        if self.cutoff is not None:
            query = query.where(Point.time <= self.cutoff)
        query = query.order_by(Point.time, Point.run_id, Point.seq)
        return ((utc(t), run, counted) for t, run, counted in _rows(self.engine_or_conn, query))


def _rows(engine_or_conn, query):
    if isinstance(engine_or_conn, sa.Connection):
        yield from engine_or_conn.execute(query)
        return
    with engine_or_conn.connect() as conn:
        yield from conn.execution_options(yield_per=10_000).execute(query)


def load_graph(source, cutoff: datetime | None = None) -> Graph:
    """The graph from a connection or an engine, as it stood at ``cutoff`` (aware UTC, or None)."""
    if isinstance(source, sa.Engine):
        with source.connect() as conn:
            graph = load_graph(conn, cutoff)
        graph.engine_or_conn = source
        return graph
    conn = source
    graph = Graph(conn, cutoff)
    graph.names = dict(conn.execute(sa.select(Model.id, Model.name).order_by(Model.name)).all())
    for row in conn.execute(sa.select(Edge).order_by(Edge.id)).mappings():
        edge = EdgeNode(row["model_id"], row["parent_id"], row["relation"], row["developer"], row["weight"],
                        row["teacher_flops"])
        graph.parents.setdefault(edge.model_id, []).append(edge)
        graph.children.setdefault(edge.parent_id, []).append(edge)
    late = []
    for row in conn.execute(sa.select(Run).order_by(Run.id)).mappings():
        started = utc(row["started_at"]) if row["started_at"] else None
        accepted = utc(row["accepted_at"]) if row["accepted_at"] else None
        ended = utc(row["ended_at"]) if row["ended_at"] else None
        if cutoff is not None and ((started and started > cutoff) or (accepted and accepted > cutoff)):
            continue
        node = RunNode(row["id"], row["identity"], row["kind"], row["model_id"], row["stage"], row["name"],
                       row["source"], row["total_flops"], row["counted_flops"], row["rollout_flops"], row["low_flops"],
                       row["high_flops"], row["verified"], row["closed"], started, ended, accepted,
                       row["realized_by"], row["dossier_digest"], row["ledger_head"])
        if cutoff is not None and node.kind == "tracked" and ended is not None and ended > cutoff:
            late.append(node)
        graph.runs[node.id] = node
        graph.runs_of.setdefault(node.model_id, []).append(node)
    for node in late:                    # still running at the cutoff: its figure at its last point by then
        counted = conn.execute(sa.select(Point.counted).where(Point.run_id == node.id, Point.time <= cutoff)
                               .order_by(Point.seq.desc()).limit(1)).scalar()
        node.counted, node.partial, node.closed = counted or 0, True, False
        node.low = node.high = node.counted
    for run in list(graph.runs.values()):  # a plan whose run started after the cutoff is still open then
        if run.realized_by and run.realized_by not in graph.runs:
            run.realized_by = None
    return graph
