"""The first schema: models, lineage, runs, points.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from auditor.registry.exact import ExactInt

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )
    op.create_table(
        "lineage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.Column("relation", sa.String(20), nullable=False),
        sa.Column("developer", sa.String(10), nullable=True),
        sa.Column("weight", sa.String(60), nullable=True),
        sa.Column("teacher_flops", ExactInt(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.CheckConstraint("relation IN ('fine_tuned', 'merged', 'distilled')", name=op.f("ck_lineage_relation")),
        sa.CheckConstraint("developer IS NULL OR developer IN ('same', 'other')", name=op.f("ck_lineage_developer")),
        sa.CheckConstraint("model_id <> parent_id", name=op.f("ck_lineage_not_itself")),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_lineage_model_id"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["models.id"], name=op.f("fk_lineage_parent_id"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lineage")),
        sa.UniqueConstraint("model_id", "parent_id", name=op.f("uq_lineage_model_parent")),
    )
    op.create_index(op.f("ix_lineage_model_id"), "lineage", ["model_id"])
    op.create_index(op.f("ix_lineage_parent_id"), "lineage", ["parent_id"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.String(1000), nullable=True),
        sa.Column("total_flops", ExactInt(), nullable=False),
        sa.Column("counted_flops", ExactInt(), nullable=False),
        sa.Column("rollout_flops", ExactInt(), nullable=False),
        sa.Column("low_flops", ExactInt(), nullable=False),
        sa.Column("high_flops", ExactInt(), nullable=False),
        sa.Column("dossier_digest", sa.String(64), nullable=True),
        sa.Column("ledger_head", sa.String(64), nullable=True),
        sa.Column("ledger_seq", sa.Integer(), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("verified", sa.String(300), nullable=False),
        sa.Column("started_at", Time, nullable=True),
        sa.Column("ended_at", Time, nullable=True),
        sa.Column("accepted_at", Time, nullable=True),
        sa.Column("plan_key", sa.String(64), nullable=True),
        sa.Column("realized_by", sa.Integer(), nullable=True),
        sa.Column("added_at", Time, nullable=False),
        sa.CheckConstraint("kind IN ('tracked', 'planned')", name=op.f("ck_runs_kind")),
        sa.CheckConstraint("stage IN ('pretraining', 'sft', 'rl', 'distillation', 'merge', 'other')",
                           name=op.f("ck_runs_stage")),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_runs_model_id"), ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["realized_by"], ["runs.id"], name=op.f("fk_runs_realized_by"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("identity", name=op.f("uq_runs_identity")),
    )
    op.create_index(op.f("ix_runs_model_id"), "runs", ["model_id"])
    op.create_index(op.f("ix_runs_plan_key"), "runs", ["plan_key"])
    op.create_table(
        "points",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("time", Time, nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("counted", ExactInt(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_points_run_id"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_points")),
    )
    op.create_index(op.f("ix_points_time"), "points", ["time"])


def downgrade() -> None:
    op.drop_table("points")
    op.drop_table("runs")
    op.drop_table("lineage")
    op.drop_table("models")
