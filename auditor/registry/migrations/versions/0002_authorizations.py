"""Authorizations: the history of a model's approved budgets, and which run held which.

Revision ID: 0002
Revises: 0001

Two new tables; nothing of 0001's changes, so a registry made at 0001 keeps every row (a test
upgrades one with data in it).
"""
import sqlalchemy as sa
from alembic import op

from auditor.registry.exact import ExactInt

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "authorizations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("approver_keyid", sa.String(200), nullable=False),
        sa.Column("approver_name", sa.String(200), nullable=True),
        sa.Column("budget_flops", ExactInt(), nullable=False),
        sa.Column("preflight_low", ExactInt(), nullable=True),
        sa.Column("preflight_flops", ExactInt(), nullable=True),
        sa.Column("preflight_high", ExactInt(), nullable=True),
        sa.Column("config_name", sa.String(200), nullable=True),
        sa.Column("config_sha256", sa.String(64), nullable=False),
        sa.Column("run_name", sa.String(200), nullable=True),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("expires", sa.Date(), nullable=True),
        sa.Column("supersedes", sa.String(64), nullable=True),
        sa.Column("signed_bytes", sa.LargeBinary(), nullable=True),
        sa.Column("verified", sa.String(300), nullable=False),
        sa.Column("added_at", Time, nullable=False),
        sa.CheckConstraint("source IN ('signed', 'ledger')", name=op.f("ck_authorizations_source")),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_authorizations_model_id"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authorizations")),
        sa.UniqueConstraint("sha256", name=op.f("uq_authorizations_sha256")),
    )
    op.create_index(op.f("ix_authorizations_model_id"), "authorizations", ["model_id"])
    op.create_index(op.f("ix_authorizations_supersedes"), "authorizations", ["supersedes"])
    op.create_table(
        "run_authorizations",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("authorization_id", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("held_from", Time, nullable=False),
        sa.Column("used_flops", ExactInt(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_authorizations_run_id"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["authorization_id"], ["authorizations.id"],
                                name=op.f("fk_run_authorizations_authorization_id"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("run_id", "authorization_id", name=op.f("pk_run_authorizations")),
    )
    op.create_index(op.f("ix_run_authorizations_authorization_id"), "run_authorizations", ["authorization_id"])


def downgrade() -> None:
    op.drop_table("run_authorizations")
    op.drop_table("authorizations")
