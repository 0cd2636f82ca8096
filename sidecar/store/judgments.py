"""Repository functions of the judge: which events still need a verdict, and the verdicts.
Each call is one transaction; errors leave as one-line `StoreError`s."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session

from sidecar.store.repository import dialect_insert, transaction
from sidecar.store.tables import Candidate, Event, Judgment


@dataclass(frozen=True)
class PendingEvent:
    """A stored event the judge still owes a verdict; `attempts` counts its earlier failures."""

    row_id: int
    prompt_name: str
    prompt_version: int
    inputs: dict[str, str]
    output: str
    trace: dict[str, Any] | None
    attempts: int = 0


@dataclass(frozen=True)
class JudgmentRecord:
    """One judging round's result: a score and feedback, or an error and when to try again."""

    row_id: int
    prompt_name: str
    prompt_version: int
    judge_version: str
    score: float | None = None
    feedback: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None


_PENDING_COLUMNS = (
    Event.id,
    Event.prompt_name,
    Event.prompt_version,
    Event.inputs,
    Event.output,
    Event.trace,
)


def unjudged_events(
    engine: Engine,
    prompt_name: str,
    judge_version: str,
    after_id: int,
    limit: int,
    partitions: Collection[int] | None = None,
) -> list[PendingEvent]:
    """Events of a prompt with no judgment yet under this judge version, oldest first; only
    those consumed from `partitions` when given (a replica's share)."""
    judged = (
        select(Judgment.id)
        .where(Judgment.event_row_id == Event.id, Judgment.judge_version == judge_version)
        .exists()
    )
    query = (
        select(*_PENDING_COLUMNS)
        .where(Event.prompt_name == prompt_name, Event.id > after_id, ~judged)  # type: ignore[operator]
        .order_by(Event.id)  # type: ignore[arg-type]
        .limit(limit)
    )
    if partitions is not None:
        query = query.where(Event.source_partition.in_(partitions))  # type: ignore[attr-defined]
    with transaction(engine) as connection:
        return [PendingEvent(*row) for row in connection.execute(query)]


def due_judgment_retries(
    engine: Engine,
    prompt_name: str,
    judge_version: str,
    now: datetime,
    limit: int,
    exclude: Collection[int] = (),
    partitions: Collection[int] | None = None,
) -> list[PendingEvent]:
    """Events whose judgment failed and whose retry time has come (of `partitions`, if given)."""
    query = (
        select(*_PENDING_COLUMNS, Judgment.attempts)
        .join(Judgment, Judgment.event_row_id == Event.id)  # type: ignore[arg-type]
        .where(
            Judgment.judge_version == judge_version,
            Judgment.status == "error",
            Judgment.next_attempt_at <= now,  # type: ignore[operator]
            Event.prompt_name == prompt_name,
        )
        .order_by(Judgment.next_attempt_at)  # type: ignore[arg-type]
        .limit(limit + len(exclude))
    )
    if partitions is not None:
        query = query.where(Event.source_partition.in_(partitions))  # type: ignore[attr-defined]
    with transaction(engine) as connection:
        rows = [PendingEvent(*row) for row in connection.execute(query)]
    return [row for row in rows if row.row_id not in exclude][:limit]


def store_judgments(engine: Engine, records: Sequence[JudgmentRecord], now: datetime) -> None:
    """Upsert one row per (event, judge version); a stored `ok` is never overwritten by an error."""
    if not records:
        return
    rows = [
        {
            "event_row_id": record.row_id,
            "prompt_name": record.prompt_name,
            "prompt_version": record.prompt_version,
            "judge_version": record.judge_version,
            "status": "ok" if record.error is None else "error",
            "score": record.score,
            "feedback": record.feedback,
            "error": record.error,
            "attempts": 1,
            "created_at": now,
            "updated_at": now,
            "next_attempt_at": record.next_attempt_at,
        }
        for record in records
    ]
    with transaction(engine) as connection:
        statement = dialect_insert(connection)(Judgment).values(rows)
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["event_row_id", "judge_version"],
            set_={
                "status": excluded.status,
                "score": excluded.score,
                "feedback": excluded.feedback,
                "error": excluded.error,
                "attempts": Judgment.attempts + excluded.attempts,
                "updated_at": excluded.updated_at,
                "next_attempt_at": excluded.next_attempt_at,
            },
            where=Judgment.status != "ok",  # type: ignore[arg-type]
        )
        connection.execute(statement)


def judgments_for(engine: Engine, prompt_name: str | None = None) -> list[Judgment]:
    """Stored judgments (all versions), oldest event first."""
    query = select(Judgment).order_by(Judgment.event_row_id)  # type: ignore[arg-type]
    if prompt_name is not None:
        query = query.where(Judgment.prompt_name == prompt_name)
    with transaction(engine) as connection:
        return [Judgment.model_validate(row._mapping) for row in connection.execute(query)]


def judgment_feed(engine: Engine) -> list[tuple[Judgment, str]]:
    """Every judgment with the output it judged, oldest event first (what `demo` shows)."""
    query = (
        select(Judgment, Event.output)
        .join(Event, Event.id == Judgment.event_row_id)  # type: ignore[arg-type]
        .order_by(Judgment.event_row_id)  # type: ignore[arg-type]
    )
    with Session(engine) as session:
        return [(judgment, output) for judgment, output in session.exec(query)]


def active_versions(engine: Engine) -> dict[str, int]:
    """Prompt name → its active version."""
    query = select(Candidate.prompt_name, Candidate.version).where(Candidate.status == "active")
    with transaction(engine) as connection:
        return {name: int(version) for name, version in connection.execute(query)}
