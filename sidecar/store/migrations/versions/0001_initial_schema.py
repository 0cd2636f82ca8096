"""Initial schema: events, ingest counts, judgments, runs, candidates, evaluations, audit, outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_audit_log_prompt_name"), "audit_log", ["prompt_name"], unique=False)
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("prompt_version", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inputs", JSON_TYPE, nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("trace", JSON_TYPE, nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("segment", sa.String(length=200), nullable=True),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(
        "ix_events_prompt_received", "events", ["prompt_name", "received_at"], unique=False
    )
    op.create_table(
        "ingest_counts",
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("prompt_name", "outcome"),
    )
    op.create_table(
        "optimization_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("budget", JSON_TYPE, nullable=False),
        sa.Column("metric_calls", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("frontier", JSON_TYPE, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_optimization_runs_prompt_name"), "optimization_runs", ["prompt_name"], unique=False
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("document", JSON_TYPE, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_outbox_status"), "outbox", ["status"], unique=False)
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("components", JSON_TYPE, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("parents", JSON_TYPE, nullable=False),
        sa.Column("origin_run_id", sa.Integer(), nullable=True),
        sa.Column("mutation_summary", sa.Text(), nullable=True),
        sa.Column("flags", JSON_TYPE, nullable=False),
        sa.Column("evidence", JSON_TYPE, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_by", sa.String(length=200), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["origin_run_id"],
            ["optimization_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prompt_name", "version"),
    )
    op.create_index(op.f("ix_candidates_prompt_name"), "candidates", ["prompt_name"], unique=False)
    op.create_index(op.f("ix_candidates_status"), "candidates", ["status"], unique=False)
    op.create_table(
        "judgments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_row_id", sa.Integer(), nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("prompt_version", sa.Integer(), nullable=False),
        sa.Column("judge_version", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_row_id"],
            ["events.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_row_id", "judge_version"),
    )
    op.create_index(op.f("ix_judgments_event_row_id"), "judgments", ["event_row_id"], unique=False)
    op.create_index(op.f("ix_judgments_prompt_name"), "judgments", ["prompt_name"], unique=False)
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("event_row_id", sa.Integer(), nullable=False),
        sa.Column("judge_version", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["candidate_id"],
            ["candidates.id"],
        ),
        sa.ForeignKeyConstraint(
            ["event_row_id"],
            ["events.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["optimization_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("candidate_id", "event_row_id", "judge_version"),
    )
    op.create_index(
        op.f("ix_evaluations_candidate_id"), "evaluations", ["candidate_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_evaluations_candidate_id"), table_name="evaluations")
    op.drop_table("evaluations")
    op.drop_index(op.f("ix_judgments_prompt_name"), table_name="judgments")
    op.drop_index(op.f("ix_judgments_event_row_id"), table_name="judgments")
    op.drop_table("judgments")
    op.drop_index(op.f("ix_candidates_status"), table_name="candidates")
    op.drop_index(op.f("ix_candidates_prompt_name"), table_name="candidates")
    op.drop_table("candidates")
    op.drop_index(op.f("ix_outbox_status"), table_name="outbox")
    op.drop_table("outbox")
    op.drop_index(op.f("ix_optimization_runs_prompt_name"), table_name="optimization_runs")
    op.drop_table("optimization_runs")
    op.drop_table("ingest_counts")
    op.drop_index("ix_events_prompt_received", table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_audit_log_prompt_name"), table_name="audit_log")
    op.drop_table("audit_log")
