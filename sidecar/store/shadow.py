"""Repository functions of the shadow runner: the fresh events a candidate is compared on, when
each candidate entered shadow, and the cache of pairwise verdicts (`comparisons`), paid once.
Each call is one transaction; errors leave as one-line `StoreError`s."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update

from sidecar.store.candidates import IN_CHUNK
from sidecar.store.database import aware
from sidecar.store.repository import dialect_insert, transaction
from sidecar.store.tables import AuditEntry, Candidate, Comparison, Event


@dataclass(frozen=True)
class FreshEvent:
    """A stored event to replay both versions on: its inputs, and the segment the gate checks.
    Its live output and judgment are not read (production's answer is monitoring, never the
    baseline of a replay)."""

    row_id: int
    segment: str | None
    inputs: dict[str, str]
    sample_rate: float | None = None
    """The rate ingest kept the event at: its pair weighs 1/rate at the gate."""


@dataclass(frozen=True)
class Compared:
    """The judge's pairwise verdict on a candidate's (a) and the champion's (b) answers."""

    winner: str
    feedback: str


def fresh_events(engine: Engine, prompt_name: str, after: datetime, limit: int) -> list[FreshEvent]:
    """The first `limit` events of a prompt received after `after`, oldest first: traffic the
    run that created a candidate at `after` never saw. Judged or not."""
    query = (
        select(Event.id, Event.segment, Event.inputs, Event.sample_rate)
        .where(
            Event.prompt_name == prompt_name,
            Event.received_at > after.astimezone(UTC),  # type: ignore[operator]
        )
        .order_by(Event.received_at, Event.id)
        .limit(limit)
    )
    with transaction(engine) as connection:
        return [FreshEvent(*row) for row in connection.execute(query)]


def entered_shadow(
    engine: Engine, prompt_name: str, versions: Sequence[int]
) -> dict[int, datetime]:
    """Version -> when it last moved to `shadow` (its audit row): where its deadline runs from."""
    if not versions:
        return {}
    query = (
        select(AuditEntry.version, func.max(AuditEntry.at))
        .where(
            AuditEntry.prompt_name == prompt_name,
            AuditEntry.version.in_(list(versions)),  # type: ignore[attr-defined]
            AuditEntry.to_status == "shadow",
        )
        .group_by(AuditEntry.version)
    )
    with transaction(engine) as connection:
        return {int(version): aware(at) for version, at in connection.execute(query)}


def keep_shadow_figures(
    engine: Engine, prompt_name: str, version: int, figures: dict[str, Any]
) -> bool:
    """Store the figures so far as evidence["shadow"], only while the version is in `shadow`:
    False when someone moved it meanwhile (their decision stands, and the figures no longer
    describe where it is)."""
    where = (
        Candidate.prompt_name == prompt_name,
        Candidate.version == version,
        Candidate.status == "shadow",
    )
    with transaction(engine) as connection:
        evidence = connection.execute(select(Candidate.evidence).where(*where)).first()
        if evidence is None:
            return False
        changed = connection.execute(
            update(Candidate)
            .where(*where)  # type: ignore[arg-type]
            .values(evidence={**(evidence[0] or {}), "shadow": figures})
        ).rowcount
    return bool(changed)


def cached_comparisons(
    engine: Engine,
    candidate_id: int,
    champion_id: int,
    event_ids: Iterable[int],
    key: tuple[str, str],
) -> dict[int, Compared]:
    """Event row id -> the verdict already paid for on this pair of versions under `key` (task
    version, judge version)."""
    task_version, judge_version = key
    events = list(event_ids)
    found: dict[int, Compared] = {}
    with transaction(engine) as connection:
        for start in range(0, len(events), IN_CHUNK):
            query = select(Comparison.event_row_id, Comparison.winner, Comparison.feedback).where(
                Comparison.candidate_id == candidate_id,
                Comparison.champion_id == champion_id,
                Comparison.event_row_id.in_(events[start : start + IN_CHUNK]),  # type: ignore[attr-defined]
                Comparison.task_version == task_version,
                Comparison.judge_version == judge_version,
            )
            found.update(
                (event, Compared(winner, feedback or ""))
                for event, winner, feedback in connection.execute(query)
            )
    return found


def store_comparisons(
    engine: Engine,
    candidate_id: int,
    champion_id: int,
    key: tuple[str, str],
    verdicts: Mapping[int, Compared],
    now: datetime,
) -> None:
    """Add verdicts to the cache under `key`; one already there is kept (it was paid first)."""
    if not verdicts:
        return
    task_version, judge_version = key
    rows = [
        {
            "candidate_id": candidate_id,
            "champion_id": champion_id,
            "event_row_id": event,
            "task_version": task_version,
            "judge_version": judge_version,
            "winner": verdict.winner,
            "feedback": verdict.feedback,
            "created_at": now,
        }
        for event, verdict in sorted(verdicts.items())
    ]
    with transaction(engine) as connection:
        connection.execute(
            dialect_insert(connection)(Comparison)
            .values(rows)
            .on_conflict_do_nothing(
                index_elements=[
                    "candidate_id",
                    "champion_id",
                    "event_row_id",
                    "task_version",
                    "judge_version",
                ]
            )
        )
