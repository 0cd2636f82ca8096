"""Judge economics: spend per prompt, purpose and minute; the rate each event was sampled at.

Events stored before this revision have no sample rate: they count as kept at rate 1.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spend",
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("unpriced_calls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("prompt_name", "purpose", "minute"),
    )
    op.add_column("events", sa.Column("sample_rate", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("events", "sample_rate")
    op.drop_table("spend")
