"""Repository functions of ingest, seeding and status, and the transaction helpers the other
repositories (`judgments`, `candidates`) share. Only repository modules write rows; each call is
one transaction, and SQLAlchemy errors leave as `StoreError` so callers never see the driver."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

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
    OutboxEntry,
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
    Each row keeps the rate its event was sampled at, which weighs it in the optimizer's and
    the shadow gate's means; a batch with no rates leaves the column out (NULL), so events
    stored by other means write the columns every schema revision has.

    ON CONFLICT covers a replica racing us with the same id; only then are the rows re-read
    to tell ours (same partition and offset) from theirs.
    """
    if not new:
        return set()
    sqlite_dialect = connection.dialect.name == "sqlite"
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    rated = any(item.sample_rate is not None for item in new.values())
    columns = _EVENT_COLUMNS + (", sample_rate" if rated else "")
    statement = (
        f"INSERT INTO events ({columns}) VALUES ({', '.join([mark] * (13 if rated else 12))}) "
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
        + ((item.sample_rate,) if rated else ())
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


def recent_input_keys(engine: Engine, prompt_name: str, limit: int) -> set[str]:
    """The input keys the prompt's newest `limit` events carry (what a template may name)."""
    query = (
        select(Event.inputs)
        .where(Event.prompt_name == prompt_name)
        .order_by(Event.received_at.desc())
        .limit(limit)
    )
    with transaction(engine) as connection:
        return {key for inputs in connection.execute(query).scalars() for key in inputs}


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
                action="seed",
                actor="config",
                reason="seed from CONFIG_FILE",
                at=now,
            )
        )
    return True


def status_summary(engine: Engine) -> dict[str, Any]:
    """What `gepa-sidecar status --json` prints: counters, optimization spend, active versions."""
    events: dict[str, int] = {
        **ingest_totals(engine),
        "judged": 0,
        "judge_errors": 0,
        "expired": 0,
    }
    names_of = {"ok": "judged", "error": "judge_errors", "expired": "expired"}
    with transaction(engine) as connection:
        for status, total in connection.execute(
            select(Judgment.status, func.count()).group_by(Judgment.status)
        ):
            events[names_of[status]] += int(total)
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
        publishing = _publishing(connection)
    return {
        "events": events,
        "optimization": {"runs": int(runs), "metric_calls": int(calls), "cost_usd": float(cost)},
        "prompts": {
            name: {
                "active_version": active.get(name),
                **publishing.get(name, {"published": {}, "pending_publishes": 0}),
            }
            for name in sorted(names)
        },
    }


def _publishing(connection: Connection) -> dict[str, dict[str, Any]]:
    """Per prompt: the version each target last received, and deliveries still owed."""
    rows = connection.execute(
        select(OutboxEntry.prompt_name, OutboxEntry.target, OutboxEntry.status, OutboxEntry.version)
        .where(OutboxEntry.status.in_(("pending", "delivered")))  # type: ignore[attr-defined]
        .order_by(OutboxEntry.id)  # type: ignore[arg-type]
    ).all()
    found: dict[str, dict[str, Any]] = {}
    for name, target, status, version in rows:
        entry = found.setdefault(name, {"published": {}, "pending_publishes": 0})
        if status == "pending":
            entry["pending_publishes"] += 1
        else:
            entry["published"][target] = version
    return found
