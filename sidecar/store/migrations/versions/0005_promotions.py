"""Promotions: audit rows name their action; outbox rows belong to one activation per target;
pairwise shadow comparisons get their own table.

Older audit rows can only be a seed, a birth in the pool or a proposal (nothing else wrote the
log), so their action is filled in from their statuses. Nothing wrote the outbox before this
revision, so its new NOT NULL `activation_id` needs no value for old rows.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OUTBOX_UNIQUE = "uq_outbox_activation_id_target"


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("action", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE audit_log SET action = CASE "
        "WHEN from_status IS NULL AND to_status = 'active' THEN 'seed' "
        "WHEN from_status IS NULL AND to_status = 'pool' THEN 'breed' "
        "WHEN from_status = 'pool' AND to_status = 'proposed' THEN 'propose' END"
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("activation_id", sa.Integer(), nullable=False))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint(OUTBOX_UNIQUE, ["activation_id", "target"])
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("champion_id", sa.Integer(), nullable=False),
        sa.Column("event_row_id", sa.Integer(), nullable=False),
        sa.Column("task_version", sa.String(length=128), nullable=False),
        sa.Column("judge_version", sa.String(length=128), nullable=False),
        sa.Column("winner", sa.String(length=16), nullable=False),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidates.id"]),
        sa.ForeignKeyConstraint(["champion_id"], ["candidates.id"]),
        sa.ForeignKeyConstraint(["event_row_id"], ["events.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "candidate_id", "champion_id", "event_row_id", "task_version", "judge_version"
        ),
    )


def downgrade() -> None:
    op.drop_table("comparisons")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(OUTBOX_UNIQUE, type_="unique")
        batch.drop_column("updated_at")
        batch.drop_column("activation_id")
    op.drop_column("audit_log", "action")
