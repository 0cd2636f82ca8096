"""The schema of the whole loop. Every stage reads and writes these rows; nothing is pickled.

Alembic migrations under `migrations/` create exactly this schema (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(SQLModel, table=True):
    """A sampled, valid traffic event; `event_id` is unique: a redelivery is never a second row."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_prompt_received", "prompt_name", "received_at"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=36, unique=True)
    prompt_name: str = Field(max_length=200)
    prompt_version: int
    timestamp: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    inputs: dict[str, str] = Field(sa_column=Column(JSONType, nullable=False))
    output: str = Field(sa_column=Column(Text, nullable=False))
    trace: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    meta: dict[str, Any] | None = Field(default=None, sa_column=Column("metadata", JSONType))
    segment: str | None = Field(default=None, max_length=200)
    sample_rate: float | None = None
    source_partition: int
    source_offset: int = Field(sa_column=Column(BigInteger, nullable=False))


class IngestCount(SQLModel, table=True):
    """Running totals per prompt and outcome, updated in the batch's own transaction."""

    __tablename__ = "ingest_counts"

    prompt_name: str = Field(primary_key=True, max_length=200)
    outcome: str = Field(primary_key=True, max_length=32)
    count: int = 0


class Spend(SQLModel, table=True):
    """Model spend per prompt, purpose (judge, shadow, optimize) and minute, from every replica:
    what the judge's hourly cap and `status` read. `cost_usd` holds only priced calls; calls to
    a model with no price are counted in `unpriced_calls`, their cost unknown."""

    __tablename__ = "spend"

    prompt_name: str = Field(primary_key=True, max_length=200)
    purpose: str = Field(primary_key=True, max_length=16)
    minute: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    cost_usd: float = 0.0
    calls: int = 0
    unpriced_calls: int = 0


class Judgment(SQLModel, table=True):
    """The judge's score and feedback for one event under one judge version (model + rubric)."""

    __tablename__ = "judgments"
    __table_args__ = (
        UniqueConstraint("event_row_id", "judge_version"),
        Index("ix_judgments_version_status_due", "judge_version", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_row_id: int = Field(foreign_key="events.id", index=True)
    prompt_name: str = Field(max_length=200, index=True)
    prompt_version: int
    judge_version: str = Field(max_length=128)
    status: str = Field(max_length=16)
    score: float | None = None
    feedback: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 0
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    next_attempt_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )


class OptimizationRun(SQLModel, table=True):
    """One GEPA run: its budget, what it spent, how it ended, and the frontier it left."""

    __tablename__ = "optimization_runs"

    id: int | None = Field(default=None, primary_key=True)
    prompt_name: str = Field(max_length=200, index=True)
    status: str = Field(max_length=16)
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    budget: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    metric_calls: int = 0
    cost_usd: float = 0.0
    frontier: list[int] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))


class Candidate(SQLModel, table=True):
    """A prompt version: named text components, its parents, and where it is in the lifecycle."""

    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("prompt_name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    prompt_name: str = Field(max_length=200, index=True)
    version: int
    status: str = Field(max_length=32, index=True)
    components: dict[str, str] = Field(sa_column=Column(JSONType, nullable=False))
    sha256: str = Field(max_length=64)
    parents: list[int] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    origin_run_id: int | None = Field(default=None, foreign_key="optimization_runs.id")
    mutation_summary: str | None = Field(default=None, sa_column=Column(Text))
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    evidence: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    approved_by: str | None = Field(default=None, max_length=200)
    approved_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Evaluation(SQLModel, table=True):
    """A candidate's replayed output and judged score on one event: the cache that is never paid
    twice. Its key is everything that changes the score: the candidate, the event, the task path
    (`task_version`: task model, api_base, template) and the judge (`judge_version`)."""

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("candidate_id", "event_row_id", "task_version", "judge_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    candidate_id: int = Field(foreign_key="candidates.id", index=True)
    event_row_id: int = Field(foreign_key="events.id")
    task_version: str = Field(max_length=128)
    judge_version: str = Field(max_length=128)
    run_id: int | None = Field(default=None, foreign_key="optimization_runs.id")
    output: str = Field(sa_column=Column(Text, nullable=False))
    score: float
    feedback: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class MutationAttempt(SQLModel, table=True):
    """One reflective proposal from a parent: what it changed, how it scored on the parent's
    minibatch, and whether it became a candidate (accepted), lost (rejected) or never came
    back usable (failed)."""

    __tablename__ = "mutation_attempts"
    __table_args__ = (Index("ix_mutation_attempts_prompt_parent", "prompt_name", "parent_version"),)

    id: int | None = Field(default=None, primary_key=True)
    prompt_name: str = Field(max_length=200)
    run_id: int | None = Field(default=None, foreign_key="optimization_runs.id")
    parent_version: int
    component: str = Field(max_length=200)
    summary: str = Field(sa_column=Column(Text, nullable=False))
    text: str | None = Field(default=None, sa_column=Column(Text))
    outcome: str = Field(max_length=16)
    parent_score: float | None = None
    child_score: float | None = None
    child_version: int | None = None
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class AuditEntry(SQLModel, table=True):
    """One lifecycle transition: who moved which version from what to what, when, and why.

    `action` names the decision (seed, breed, propose, shadow, gate, approve, force_approve,
    activate, retire, reject, rollback); rows older than the column have none. The id of a row
    with to_status `active` is an activation's id."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    prompt_name: str = Field(max_length=200, index=True)
    version: int
    from_status: str | None = Field(default=None, max_length=32)
    to_status: str = Field(max_length=32)
    action: str | None = Field(default=None, max_length=32)
    actor: str = Field(max_length=200)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class OutboxEntry(SQLModel, table=True):
    """A publication owed to one target: one activation's document, written in the transaction
    that made the version active, delivered once (`pending` -> `delivered`, or `superseded` by a
    newer activation before it was). `attempts` counts deliveries begun, committed before each."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("activation_id", "target"),)

    id: int | None = Field(default=None, primary_key=True)
    activation_id: int
    prompt_name: str = Field(max_length=200)
    version: int
    target: str = Field(max_length=32)
    document: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    status: str = Field(max_length=16, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    published_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Comparison(SQLModel, table=True):
    """Pairwise shadow mode: the judge's verdict on a candidate's and the champion's replayed
    answers to one event, shown side by side. Keyed like an evaluation (both versions, the
    event, the task path, the judge), so a verdict is paid once."""

    __tablename__ = "comparisons"
    __table_args__ = (
        UniqueConstraint(
            "candidate_id", "champion_id", "event_row_id", "task_version", "judge_version"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    candidate_id: int = Field(foreign_key="candidates.id")
    champion_id: int = Field(foreign_key="candidates.id")
    event_row_id: int = Field(foreign_key="events.id")
    task_version: str = Field(max_length=128)
    judge_version: str = Field(max_length=128)
    winner: str = Field(max_length=16)
    feedback: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ModelError(SQLModel, table=True):
    """The last failure of each model role with each kind of error, from every process that
    calls models: what `status` shows. Written when the gateway logs a failure (the first, then
    at most once a minute with the count since), never once per failed call."""

    __tablename__ = "model_errors"

    role: str = Field(primary_key=True, max_length=16)
    kind: str = Field(primary_key=True, max_length=64)
    message: str = Field(sa_column=Column(Text, nullable=False))
    count: int = 0
    first_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
