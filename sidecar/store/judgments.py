"""Repository functions of the judge: which events still need a verdict, and the verdicts.
Each call is one transaction; errors leave as one-line `StoreError`s."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Engine, Integer, String, func, literal, select, update
from sqlmodel import Session

from sidecar.store.repository import dialect_insert, transaction
from sidecar.store.spend import SpendTotal, add_spend
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
    """One judging round's result: a score and feedback, or an error and when to try again;
    `unavailable`: the judge model could not answer at all (not stored: it pauses judging)."""

    row_id: int
    prompt_name: str
    prompt_version: int
    judge_version: str
    score: float | None = None
    feedback: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    spend: SpendTotal = field(default_factory=SpendTotal)
    unavailable: bool = False


@dataclass(frozen=True)
class Backlog:
    """Events of a prompt still owed a verdict under one judge version: never judged, and
    failed ones awaiting a retry; `lowest_unjudged` bounds where the next scan starts."""

    unjudged: int
    errors: int
    oldest: datetime | None
    lowest_unjudged: int | None
    highest: int

    @property
    def events(self) -> int:
        return self.unjudged + self.errors


_PENDING_COLUMNS = (
    Event.id,
    Event.prompt_name,
    Event.prompt_version,
    Event.inputs,
    Event.output,
    Event.trace,
)


def _judged(judge_version: str) -> Any:
    return (
        select(Judgment.id)
        .where(Judgment.event_row_id == Event.id, Judgment.judge_version == judge_version)
        .exists()
    )


def unjudged_events(
    engine: Engine,
    prompt_name: str,
    judge_version: str,
    above: int,
    below: int | None,
    limit: int,
    partitions: Collection[int] | None = None,
    exclude: Collection[int] = (),
) -> list[PendingEvent]:
    """Events of a prompt with no judgment yet under this judge version, with ids between
    `above` and `below` (exclusive; None: no upper bound), newest first, leaving out `exclude`
    (in flight); only those consumed from `partitions` when given (a replica's share)."""
    query = (
        select(*_PENDING_COLUMNS)
        .where(Event.prompt_name == prompt_name, Event.id > above, ~_judged(judge_version))  # type: ignore[operator]
        .order_by(Event.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    )
    if below is not None:
        query = query.where(Event.id < below)  # type: ignore[operator]
    if exclude:
        query = query.where(Event.id.notin_(exclude))  # type: ignore[union-attr]
    if partitions is not None:
        query = query.where(Event.source_partition.in_(partitions))  # type: ignore[attr-defined]
    with transaction(engine) as connection:
        return [PendingEvent(*row) for row in connection.execute(query)]


def expire_events(
    engine: Engine,
    prompt_name: str,
    judge_version: str,
    older_than: datetime,
    above: int,
    now: datetime,
    partitions: Collection[int] | None = None,
    exclude: Collection[int] = (),
) -> int:
    """Mark events whose traffic is older than `older_than` and still owe a verdict (never
    judged, or failed and waiting) `expired`: kept, counted, never judged. Returns how many."""
    old = [Event.prompt_name == prompt_name, Event.timestamp < older_than]  # type: ignore[operator]
    if exclude:
        old.append(Event.id.notin_(exclude))  # type: ignore[union-attr]
    if partitions is not None:
        old.append(Event.source_partition.in_(partitions))  # type: ignore[attr-defined]
    never_judged = select(
        Event.id,
        Event.prompt_name,
        Event.prompt_version,
        literal(judge_version, String()),
        literal("expired", String()),
        literal(0, Integer()),
        literal(now, DateTime(timezone=True)),
        literal(now, DateTime(timezone=True)),
    ).where(*old, Event.id > above, ~_judged(judge_version))  # type: ignore[operator]
    failed = select(Event.id).where(*old)
    with transaction(engine) as connection:
        inserted = connection.execute(
            dialect_insert(connection)(Judgment)
            .from_select(
                [
                    "event_row_id",
                    "prompt_name",
                    "prompt_version",
                    "judge_version",
                    "status",
                    "attempts",
                    "created_at",
                    "updated_at",
                ],
                never_judged,
            )
            .on_conflict_do_nothing(index_elements=["event_row_id", "judge_version"])
            .returning(Judgment.id)  # type: ignore[arg-type]
        ).all()
        given_up = connection.execute(
            update(Judgment)
            .where(
                Judgment.judge_version == judge_version,
                Judgment.prompt_name == prompt_name,
                Judgment.status == "error",
                Judgment.event_row_id.in_(failed),  # type: ignore[attr-defined]
            )
            .values(status="expired", next_attempt_at=None, updated_at=now)
            .returning(Judgment.id)  # type: ignore[arg-type]
        ).all()
    return len(inserted) + len(given_up)


def backlog(
    engine: Engine,
    prompt_name: str,
    judge_version: str,
    above: int,
    partitions: Collection[int] | None = None,
) -> Backlog:
    """How many events still owe a verdict and how old the oldest is; unjudged events are
    looked for above `above` only (everything at or below it is known to be settled)."""
    mine = [Event.prompt_name == prompt_name]
    if partitions is not None:
        mine.append(Event.source_partition.in_(partitions))  # type: ignore[attr-defined]
    unjudged = select(func.count(), func.min(Event.id), func.min(Event.timestamp)).where(
        *mine,
        Event.id > above,  # type: ignore[operator]
        ~_judged(judge_version),
    )
    failed = (
        select(func.count(), func.min(Event.timestamp))
        .join(Judgment, Judgment.event_row_id == Event.id)  # type: ignore[arg-type]
        .where(*mine, Judgment.judge_version == judge_version, Judgment.status == "error")
    )
    highest = select(func.max(Event.id)).where(*mine)
    with transaction(engine) as connection:
        count, lowest, oldest_unjudged = connection.execute(unjudged).one()
        errors, oldest_failed = connection.execute(failed).one()
        top = connection.execute(highest).scalar_one()
    oldest = min((t for t in (oldest_unjudged, oldest_failed) if t is not None), default=None)
    return Backlog(int(count), int(errors), oldest, lowest, int(top or 0))


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
    """Upsert one row per (event, judge version), a stored `ok` never overwritten by an error,
    and add what the judgments cost to the judge's spend, in one transaction."""
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
    spent: dict[str, SpendTotal] = {}
    for record in records:
        total = spent.get(record.prompt_name, SpendTotal())
        spent[record.prompt_name] = SpendTotal(
            total.cost_usd + record.spend.cost_usd,
            total.calls + record.spend.calls,
            total.unpriced_calls + record.spend.unpriced_calls,
        )
    with transaction(engine) as connection:
        for prompt_name, spend in spent.items():
            add_spend(connection, prompt_name, "judge", now, spend)
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
