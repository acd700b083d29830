"""The registry's tables (SQLAlchemy 2.x declarative). Alembic's migrations (``migrations/``)
make exactly this schema; a test compares them.

- ``models``: named nodes.
- ``lineage``: edges child <- parent (fine_tuned, merged with a weight, distilled with the
  teacher's compute when recorded), and whether the child's developer is the parent's (same/other).
- ``runs``: a tracked run (its ledger's first record hash is its identity) or a planned one (a
  preflight a reviewer accepted: its sealed dossier's digest, or the SHA-256 of the plan's JSON).
- ``points``: a tracked run's ledger records, (seq, time, cumulative), so that the moment a
  model's cumulative compute passed a threshold can be found.
- ``authorizations``: a reviewer's signed budget for a model's run (docs/authorization.md), by the
  SHA-256 of its document (what a ledger names), with the signed bytes where they were given, and
  the SHA-256 of the one it supersedes; ``run_authorizations``: which run held which, from which
  ledger record, and what it used of it (migration 0002).
"""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from auditor.registry.exact import ExactInt

STAGES = ("pretraining", "sft", "rl", "distillation", "merge", "other")
RELATIONS = ("fine_tuned", "merged", "distilled")
DEVELOPERS = ("same", "other")
KINDS = ("tracked", "planned")
SOURCES = ("signed", "ledger")   # an authorization's bytes given (and read), or only a ledger's record of it
NAME_LIMIT = 200

NAMING = {"ix": "ix_%(table_name)s_%(column_0_name)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s",
          "pk": "pk_%(table_name)s"}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


Time = sa.DateTime(timezone=True)


def _one_of(column: str, options: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(o) for o in options)})"


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(NAME_LIMIT), unique=True)
    created_at: Mapped[datetime] = mapped_column(Time)


class Edge(Base):
    __tablename__ = "lineage"
    __table_args__ = (sa.UniqueConstraint("model_id", "parent_id", name="uq_lineage_model_parent"),
                      sa.CheckConstraint(_one_of("relation", RELATIONS), name="relation"),
                      sa.CheckConstraint(f"developer IS NULL OR {_one_of('developer', DEVELOPERS)}", name="developer"),
                      sa.CheckConstraint("model_id <> parent_id", name="not_itself"))
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    relation: Mapped[str] = mapped_column(sa.String(20))
    developer: Mapped[str | None] = mapped_column(sa.String(10), nullable=True)
    weight: Mapped[str | None] = mapped_column(sa.String(60), nullable=True)     # an exact fraction, '1/2'
    teacher_flops: Mapped[int | None] = mapped_column(ExactInt, nullable=True)  # recorded when distilled
    created_at: Mapped[datetime] = mapped_column(Time)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (sa.CheckConstraint(_one_of("kind", KINDS), name="kind"),
                      sa.CheckConstraint(_one_of("stage", STAGES), name="stage"))
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    identity: Mapped[str] = mapped_column(sa.String(64), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(10))
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    stage: Mapped[str] = mapped_column(sa.String(20))
    name: Mapped[str] = mapped_column(sa.String(NAME_LIMIT))
    source: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    total_flops: Mapped[int] = mapped_column(ExactInt)        # the ledger's training total (a plan: central)
    counted_flops: Mapped[int] = mapped_column(ExactInt)      # what the stage counts: training + rollouts
    rollout_flops: Mapped[int] = mapped_column(ExactInt)      # an RL stage's no-grad forward passes
    low_flops: Mapped[int] = mapped_column(ExactInt)
    high_flops: Mapped[int] = mapped_column(ExactInt)
    dossier_digest: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    ledger_head: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    ledger_seq: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    closed: Mapped[bool] = mapped_column(sa.Boolean)
    verified: Mapped[str] = mapped_column(sa.String(300))     # how it came in: verified, signed by ..., live
    started_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)   # a plan: when accepted
    plan_key: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True)  # a plan's figures
    realized_by: Mapped[int | None] = mapped_column(sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    added_at: Mapped[datetime] = mapped_column(Time)


class Point(Base):
    __tablename__ = "points"
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(Time, index=True)
    step: Mapped[int] = mapped_column(sa.BigInteger)
    counted: Mapped[int] = mapped_column(ExactInt)            # the run's counted compute through this record


class Approval(Base):
    """An authorization recorded for a model. ``source`` signed: its document's bytes were given
    (``signed_bytes``, re-verifiable), ledger: only a run's ledger named it (its hash, budget,
    approver key id and config hash), so the fields only the document holds are null."""
    __tablename__ = "authorizations"
    __table_args__ = (sa.CheckConstraint(_one_of("source", SOURCES), name="source"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    source: Mapped[str] = mapped_column(sa.String(10))
    approver_keyid: Mapped[str] = mapped_column(sa.String(NAME_LIMIT))
    approver_name: Mapped[str | None] = mapped_column(sa.String(NAME_LIMIT), nullable=True)
    budget_flops: Mapped[int] = mapped_column(ExactInt)
    preflight_low: Mapped[int | None] = mapped_column(ExactInt, nullable=True)      # the range it was set against
    preflight_flops: Mapped[int | None] = mapped_column(ExactInt, nullable=True)
    preflight_high: Mapped[int | None] = mapped_column(ExactInt, nullable=True)
    config_name: Mapped[str | None] = mapped_column(sa.String(NAME_LIMIT), nullable=True)
    config_sha256: Mapped[str] = mapped_column(sa.String(64))
    run_name: Mapped[str | None] = mapped_column(sa.String(NAME_LIMIT), nullable=True)
    valid_from: Mapped[date | None] = mapped_column(sa.Date, nullable=True)
    expires: Mapped[date | None] = mapped_column(sa.Date, nullable=True)
    supersedes: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True)  # its predecessor's sha256
    signed_bytes: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    verified: Mapped[str] = mapped_column(sa.String(300))     # how its signature was checked, or that it was not
    added_at: Mapped[datetime] = mapped_column(Time)


class Holding(Base):
    """A run held an authorization from ledger record ``first_seq`` (its start or a resume) and
    used ``used_flops`` of it (the covered phases, through the last record it was held)."""
    __tablename__ = "run_authorizations"
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    authorization_id: Mapped[int] = mapped_column(sa.ForeignKey("authorizations.id", ondelete="RESTRICT"),
                                                  primary_key=True, index=True)
    first_seq: Mapped[int] = mapped_column(sa.Integer)
    held_from: Mapped[datetime] = mapped_column(Time)
    used_flops: Mapped[int] = mapped_column(ExactInt)
