"""Repository functions: the only code that writes rows. Each call is one transaction, and
SQLAlchemy errors leave here as `StoreError` so callers never see the driver."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from sidecar.errors import StoreError
from sidecar.events import ConsumedEvent, components_sha256
from sidecar.store.database import first_line, json_text
from sidecar.store.tables import (
    AuditEntry,
    Candidate,
    Event,
    IngestCount,
    Judgment,
    OptimizationRun,
)

OutcomeCounts = Counter[tuple[str, str]]
"""(prompt, outcome) → records; outcome is accepted, sampled_out, invalid or duplicate."""


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction; any SQLAlchemy error becomes a one-line StoreError."""
    try:
        with engine.begin() as connection:
            yield connection
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {first_line(exc)}") from exc


def dialect_insert(connection: Connection) -> Callable[..., Any]:
    """The dialect's INSERT, which knows ON CONFLICT for both SQLite and PostgreSQL."""
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


def store_events(
    engine: Engine,
    consumed: Sequence[ConsumedEvent],
    other_outcomes: Mapping[tuple[str, str], int],
    received_at: datetime,
) -> OutcomeCounts:
    """Insert new events and add every outcome to the running totals, in one transaction.

    An event whose id is already stored (a redelivery, or twice in this batch) is a duplicate.
    Returns the outcome counts of this batch, for metrics.
    """
    counts: OutcomeCounts = Counter(other_outcomes)
    first_seen: dict[str, ConsumedEvent] = {}
    for item in consumed:
        key = str(item.event.event_id)
        if key in first_seen:
            counts[(item.event.prompt_name, "duplicate")] += 1
        else:
            first_seen[key] = item
    with transaction(engine) as connection:
        stored = _stored_ids(connection, list(first_seen))
        new = {key: item for key, item in first_seen.items() if key not in stored}
        inserted = _insert_events(connection, new, received_at)
        for key, item in first_seen.items():
            outcome = "accepted" if key in inserted else "duplicate"
            counts[(item.event.prompt_name, outcome)] += 1
        _add_counts(connection, counts)
    return counts


def _stored_ids(connection: Connection, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    query = select(Event.event_id).where(Event.event_id.in_(keys))  # type: ignore[attr-defined]
    return set(connection.execute(query).scalars())


_EVENT_COLUMNS = (
    "event_id, prompt_name, prompt_version, timestamp, received_at, inputs, output, trace, "
    "metadata, segment, source_partition, source_offset"
)


def _insert_events(
    connection: Connection, new: dict[str, ConsumedEvent], received_at: datetime
) -> set[str]:
    """The hot path of ingest: one driver-level executemany, JSON encoded in Rust by pydantic.

    ON CONFLICT covers a replica racing us with the same id; only then are the rows re-read
    to tell ours (same partition and offset) from theirs.
    """
    if not new:
        return set()
    sqlite_dialect = connection.dialect.name == "sqlite"
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    statement = (
        f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join([mark] * 12)}) "
        "ON CONFLICT (event_id) DO NOTHING"
    )
    when = _sqlite_datetime if sqlite_dialect else _utc
    received = when(received_at)
    rows = [
        (
            key,
            item.event.prompt_name,
            item.event.prompt_version,
            when(item.event.timestamp),
            received,
            _json(item.event.inputs),
            item.event.output,
            _json(item.event.trace),
            _json(item.event.metadata),
            item.event.segment,
            item.partition,
            item.offset,
        )
        for key, item in new.items()
    ]
    result = connection.exec_driver_sql(statement, rows)
    if result.rowcount == len(rows):
        return set(new)
    query = select(Event.event_id, Event.source_partition, Event.source_offset).where(
        Event.event_id.in_(list(new))  # type: ignore[attr-defined]
    )
    return {
        key
        for key, partition, offset in connection.execute(query)
        if (new[key].partition, new[key].offset) == (partition, offset)
    }


def _json(value: Any) -> str | None:
    return None if value is None else json_text(value)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _sqlite_datetime(moment: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text format; stored in UTC, since SQLite keeps no zone."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _add_counts(connection: Connection, counts: OutcomeCounts) -> None:
    rows = [
        {"prompt_name": prompt, "outcome": outcome, "count": n}
        for (prompt, outcome), n in sorted(counts.items())
        if n
    ]
    if not rows:
        return
    statement = dialect_insert(connection)(IngestCount).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=["prompt_name", "outcome"],
        set_={"count": IngestCount.count + statement.excluded["count"]},
    )
    connection.execute(statement)


def count_stored_events(engine: Engine, prompt_name: str | None = None) -> int:
    query = select(func.count()).select_from(Event)
    if prompt_name is not None:
        query = query.where(Event.prompt_name == prompt_name)
    with transaction(engine) as connection:
        return int(connection.execute(query).scalar_one())


def stored_event_ids(engine: Engine) -> list[str]:
    """Every stored event id, duplicates included (there must be none)."""
    with transaction(engine) as connection:
        return list(connection.execute(select(Event.event_id)).scalars())


def ingest_totals(engine: Engine) -> dict[str, int]:
    """Totals per outcome over all prompts, as `status` reports them."""
    totals = dict.fromkeys(("accepted", "sampled_out", "invalid", "duplicate"), 0)
    query = select(IngestCount.outcome, func.sum(IngestCount.count)).group_by(IngestCount.outcome)
    with transaction(engine) as connection:
        for outcome, total in connection.execute(query):
            totals[outcome] = int(total)
    return totals


def seed_prompt(engine: Engine, name: str, components: dict[str, str], now: datetime) -> bool:
    """Make the config file's seed version 1, active, unless the prompt already has versions."""
    with transaction(engine) as connection:
        exists = connection.execute(
            select(Candidate.id).where(Candidate.prompt_name == name).limit(1)
        ).first()
        if exists:
            return False
        connection.execute(
            dialect_insert(connection)(Candidate)
            .values(
                prompt_name=name,
                version=1,
                status="active",
                components=components,
                sha256=components_sha256(components),
                parents=[],
                flags=[],
                created_at=now,
                mutation_summary="seed from CONFIG_FILE",
            )
            .on_conflict_do_nothing(index_elements=["prompt_name", "version"])
        )
        connection.execute(
            dialect_insert(connection)(AuditEntry).values(
                prompt_name=name,
                version=1,
                from_status=None,
                to_status="active",
                actor="config",
                reason="seed from CONFIG_FILE",
                at=now,
            )
        )
    return True


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
    engine: Engine, prompt_name: str, judge_version: str, after_id: int, limit: int
) -> list[PendingEvent]:
    """Events of a prompt with no judgment yet under this judge version, oldest first."""
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
    with transaction(engine) as connection:
        return [PendingEvent(*row) for row in connection.execute(query)]


def due_judgment_retries(
    engine: Engine,
    prompt_name: str,
    judge_version: str,
    now: datetime,
    limit: int,
    exclude: Collection[int] = (),
) -> list[PendingEvent]:
    """Events whose judgment failed and whose retry time has come."""
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


def status_summary(engine: Engine) -> dict[str, Any]:
    """What `gepa-sidecar status --json` prints: counters, optimization spend, active versions."""
    events: dict[str, int] = {**ingest_totals(engine), "judged": 0, "judge_errors": 0}
    with transaction(engine) as connection:
        for status, total in connection.execute(
            select(Judgment.status, func.count()).group_by(Judgment.status)
        ):
            events["judged" if status == "ok" else "judge_errors"] += int(total)
        runs, calls, cost = connection.execute(
            select(
                func.count(OptimizationRun.id),
                func.coalesce(func.sum(OptimizationRun.metric_calls), 0),
                func.coalesce(func.sum(OptimizationRun.cost_usd), 0.0),
            )
        ).one()
        names = set(connection.execute(select(Event.prompt_name).distinct()).scalars())
        names |= set(connection.execute(select(Candidate.prompt_name).distinct()).scalars())
        active = dict(
            connection.execute(
                select(Candidate.prompt_name, Candidate.version).where(Candidate.status == "active")
            ).all()
        )
    return {
        "events": events,
        "optimization": {"runs": int(runs), "metric_calls": int(calls), "cost_usd": float(cost)},
        "prompts": {name: {"active_version": active.get(name)} for name in sorted(names)},
    }
