"""Evaluations are keyed by the task path too (`task_version`: task model, api_base, template).

The old cache was keyed by candidate, event and judge alone, and it held the champion's live
production outputs as if they were replays; neither can be trusted under the new key, so the
cache starts empty (it only ever saves money; nothing else reads it).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _evaluations(key: list[str]) -> None:
    """The evaluations table, unique on `key` (its key columns, in order)."""
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in key[:2]),
        *(sa.Column(name, sa.String(length=128), nullable=False) for name in key[2:]),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidates.id"]),
        sa.ForeignKeyConstraint(["event_row_id"], ["events.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["optimization_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(*key),
    )
    op.create_index("ix_evaluations_candidate_id", "evaluations", ["candidate_id"])


def upgrade() -> None:
    op.drop_index("ix_evaluations_candidate_id", table_name="evaluations")
    op.drop_table("evaluations")
    _evaluations(["candidate_id", "event_row_id", "task_version", "judge_version"])


def downgrade() -> None:
    op.drop_index("ix_evaluations_candidate_id", table_name="evaluations")
    op.drop_table("evaluations")
    _evaluations(["candidate_id", "event_row_id", "judge_version"])
