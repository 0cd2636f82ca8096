"""Judgments: when a failed judgment is due again, and when it was last tried.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "judgments", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("judgments", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_judgments_version_status_due",
        "judgments",
        ["judge_version", "status", "next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_judgments_version_status_due", table_name="judgments")
    op.drop_column("judgments", "updated_at")
    op.drop_column("judgments", "next_attempt_at")
