"""Mutation attempts: every reflective proposal a run made, accepted or not, so the next
reflection on the same parent knows what was already tried and why it failed.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mutation_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("parent_version", sa.Integer(), nullable=False),
        sa.Column("component", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("parent_score", sa.Float(), nullable=True),
        sa.Column("child_score", sa.Float(), nullable=True),
        sa.Column("child_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["optimization_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_mutation_attempts_prompt_parent",
        "mutation_attempts",
        ["prompt_name", "parent_version"],
    )


def downgrade() -> None:
    op.drop_index("ix_mutation_attempts_prompt_parent", table_name="mutation_attempts")
    op.drop_table("mutation_attempts")
