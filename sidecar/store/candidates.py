"""Repository functions of the optimizer: the candidate pool, the evaluation cache, runs and
mutation attempts. Each call is one transaction; errors leave as one-line `StoreError`s."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, update

from sidecar.events import components_sha256
from sidecar.store.repository import dialect_insert, transaction
from sidecar.store.tables import (
    AuditEntry,
    Candidate,
    Evaluation,
    Event,
    Judgment,
    MutationAttempt,
    OptimizationRun,
)

IN_CHUNK = 500


@dataclass(frozen=True)
class Instance:
    """A judged event in the optimizer's window: its inputs, and the live output's verdict."""

    row_id: int
    segment: str | None
    inputs: dict[str, str]
    output: str
    prompt_version: int
    score: float
    feedback: str
    sample_rate: float | None = None
    """The rate ingest kept the event at: it weighs 1/rate in the optimizer's means."""


@dataclass(frozen=True)
class Scored:
    """One (candidate, event) evaluation: the candidate's output and the judge's verdict."""

    output: str
    score: float
    feedback: str


def judged_window(
    engine: Engine, prompt_name: str, judge_version: str, limit: int, since: datetime
) -> list[Instance]:
    """The most recent `limit` events of a prompt received since `since` and judged `ok` under
    this judge version, oldest first."""
    query = (
        select(
            Event.id,
            Event.segment,
            Event.inputs,
            Event.output,
            Event.prompt_version,
            Judgment.score,
            Judgment.feedback,
            Event.sample_rate,
        )
        .join(Judgment, Judgment.event_row_id == Event.id)  # type: ignore[arg-type]
        .where(
            Event.prompt_name == prompt_name,
            Event.received_at >= since,  # type: ignore[operator]
            Judgment.judge_version == judge_version,
            Judgment.status == "ok",
        )
        .order_by(Event.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    )
    with transaction(engine) as connection:
        rows = [Instance(*row) for row in connection.execute(query)]
    return sorted(rows, key=lambda instance: instance.row_id)


def candidates_of(engine: Engine, prompt_name: str) -> dict[int, Candidate]:
    """Every version of a prompt, by version."""
    query = select(Candidate).where(Candidate.prompt_name == prompt_name)
    with transaction(engine) as connection:
        rows = [Candidate.model_validate(row._mapping) for row in connection.execute(query)]
    return {row.version: row for row in rows}


def latest_frontier(engine: Engine, prompt_name: str) -> list[int]:
    """The frontier (candidate versions) the last run of this prompt left: a finished one, or
    one a stop interrupted (what it had scored so far)."""
    query = (
        select(OptimizationRun.frontier)
        .where(
            OptimizationRun.prompt_name == prompt_name,
            OptimizationRun.status.in_(("finished", "interrupted")),  # type: ignore[attr-defined]
        )
        .order_by(OptimizationRun.id.desc())  # type: ignore[union-attr]
        .limit(1)
    )
    with transaction(engine) as connection:
        found = connection.execute(query).scalar_one_or_none()
    return list(found or [])


def cached_evaluations(
    engine: Engine,
    candidate_ids: Iterable[int],
    event_ids: Iterable[int],
    key: tuple[str, str],
) -> dict[tuple[int, int], Scored]:
    """(candidate id, event row id) → what was already paid for under `key` (task version, judge
    version). Events are asked for in chunks: a window may hold more than a database takes
    parameters."""
    task_version, judge_version = key
    candidates, events = list(candidate_ids), list(event_ids)
    found: dict[tuple[int, int], Scored] = {}
    if not candidates:
        return found
    columns = (
        Evaluation.candidate_id,
        Evaluation.event_row_id,
        Evaluation.output,
        Evaluation.score,
        Evaluation.feedback,
    )
    with transaction(engine) as connection:
        for start in range(0, len(events), IN_CHUNK):
            query = select(
                *columns
            ).where(
                Evaluation.candidate_id.in_(candidates),  # type: ignore[attr-defined]
                Evaluation.event_row_id.in_(events[start : start + IN_CHUNK]),  # type: ignore[attr-defined]
                Evaluation.task_version == task_version,
                Evaluation.judge_version == judge_version,
            )
            found.update(
                ((candidate, event), Scored(output, score, feedback or ""))
                for candidate, event, output, score, feedback in connection.execute(query)
            )
    return found


def store_evaluations(
    engine: Engine,
    candidate_id: int,
    key: tuple[str, str],
    scored: dict[int, Scored],
    run_id: int | None,
    now: datetime,
) -> None:
    """Add evaluations to the cache under `key` (task version, judge version); one already
    there is kept (it was paid for first)."""
    if not scored:
        return
    task_version, judge_version = key
    rows = [
        {
            "candidate_id": candidate_id,
            "event_row_id": event,
            "task_version": task_version,
            "judge_version": judge_version,
            "run_id": run_id,
            "output": result.output,
            "score": result.score,
            "feedback": result.feedback,
            "created_at": now,
        }
        for event, result in sorted(scored.items())
    ]
    with transaction(engine) as connection:
        connection.execute(
            dialect_insert(connection)(Evaluation)
            .values(rows)
            .on_conflict_do_nothing(
                index_elements=["candidate_id", "event_row_id", "task_version", "judge_version"]
            )
        )


def insert_candidate(
    engine: Engine,
    prompt_name: str,
    components: dict[str, str],
    parents: Sequence[int],
    run_id: int | None,
    summary: str,
    flags: Sequence[str],
    now: datetime,
) -> Candidate:
    """A new version (the next integer, never reused) in the pool, with an audit row."""
    with transaction(engine) as connection:
        latest = connection.execute(
            select(func.max(Candidate.version)).where(Candidate.prompt_name == prompt_name)
        ).scalar_one()
        version = int(latest or 0) + 1
        values: dict[str, Any] = {
            "prompt_name": prompt_name,
            "version": version,
            "status": "pool",
            "components": components,
            "sha256": components_sha256(components),
            "parents": list(parents),
            "origin_run_id": run_id,
            "mutation_summary": summary,
            "flags": list(flags),
            "created_at": now,
        }
        row_id = connection.execute(
            dialect_insert(connection)(Candidate).values(values).returning(Candidate.id)  # type: ignore[arg-type]
        ).scalar_one()
        connection.execute(
            dialect_insert(connection)(AuditEntry).values(
                prompt_name=prompt_name,
                version=version,
                from_status=None,
                to_status="pool",
                action="breed",
                actor="optimizer",
                reason=summary,
                at=now,
            )
        )
    return Candidate(id=row_id, **values)


def start_run(engine: Engine, prompt_name: str, budget: dict[str, Any], now: datetime) -> int:
    """A new run row; runs of this prompt left `running` by a killed process become `failed`."""
    with transaction(engine) as connection:
        connection.execute(
            update(OptimizationRun)
            .where(
                OptimizationRun.prompt_name == prompt_name,  # type: ignore[arg-type]
                OptimizationRun.status == "running",  # type: ignore[arg-type]
            )
            .values(status="failed", finished_at=now, error="interrupted (the process stopped)")
        )
        return int(
            connection.execute(
                dialect_insert(connection)(OptimizationRun)
                .values(
                    prompt_name=prompt_name,
                    status="running",
                    started_at=now,
                    budget=budget,
                    metric_calls=0,
                    cost_usd=0.0,
                    frontier=[],
                )
                .returning(OptimizationRun.id)  # type: ignore[arg-type]
            ).scalar_one()
        )


def finish_run(
    engine: Engine,
    run_id: int,
    status: str,
    metric_calls: int,
    cost_usd: float,
    frontier: Sequence[int],
    now: datetime,
    error: str | None = None,
) -> None:
    with transaction(engine) as connection:
        connection.execute(
            update(OptimizationRun)
            .where(OptimizationRun.id == run_id)  # type: ignore[arg-type]
            .values(
                status=status,
                finished_at=now,
                metric_calls=metric_calls,
                cost_usd=cost_usd,
                frontier=list(frontier),
                error=error,
            )
        )


def record_attempt(engine: Engine, attempt: MutationAttempt) -> None:
    with transaction(engine) as connection:
        connection.execute(
            dialect_insert(connection)(MutationAttempt).values(attempt.model_dump(exclude={"id"}))
        )


def recent_rejections(
    engine: Engine, prompt_name: str, parent_version: int, limit: int
) -> list[MutationAttempt]:
    """The last `limit` distinct proposals from this parent that were scored and lost, refused
    before scoring, or repeated a known text, newest first: what the next reflection on it
    should not repeat. Failed replies (nothing usable came back) teach nothing: left out."""
    query = (
        select(MutationAttempt)
        .where(
            MutationAttempt.prompt_name == prompt_name,
            MutationAttempt.parent_version == parent_version,
            MutationAttempt.outcome.in_(("rejected", "refused", "duplicate")),  # type: ignore[attr-defined]
        )
        .order_by(MutationAttempt.id.desc())  # type: ignore[union-attr]
        .limit(limit * 4)
    )
    with transaction(engine) as connection:
        rows = [MutationAttempt.model_validate(row._mapping) for row in connection.execute(query)]
    distinct: dict[str, MutationAttempt] = {}
    for row in rows:
        if row.outcome == "rejected" and row.child_score is None:
            continue
        distinct.setdefault(row.text or row.summary, row)
    return list(distinct.values())[:limit]


def mark_proposed(
    engine: Engine, prompt_name: str, versions: Sequence[int], reason: str, now: datetime
) -> None:
    """Pool candidates that beat the champion become `proposed`, each with an audit row."""
    with transaction(engine) as connection:
        for version in versions:
            changed = connection.execute(
                update(Candidate)
                .where(
                    Candidate.prompt_name == prompt_name,  # type: ignore[arg-type]
                    Candidate.version == version,  # type: ignore[arg-type]
                    Candidate.status == "pool",  # type: ignore[arg-type]
                )
                .values(status="proposed")
            ).rowcount
            if changed:
                connection.execute(
                    dialect_insert(connection)(AuditEntry).values(
                        prompt_name=prompt_name,
                        version=version,
                        from_status="pool",
                        to_status="proposed",
                        action="propose",
                        actor="optimizer",
                        reason=reason,
                        at=now,
                    )
                )


def candidate_means(
    engine: Engine, prompt_name: str, key: tuple[str, str]
) -> dict[int, tuple[float, int]]:
    """Version → (mean evaluated score, evaluations) under `key` (task version, judge version)."""
    task_version, judge_version = key
    query = (
        select(Candidate.version, func.avg(Evaluation.score), func.count(Evaluation.id))
        .join(Evaluation, Evaluation.candidate_id == Candidate.id)  # type: ignore[arg-type]
        .where(
            Candidate.prompt_name == prompt_name,
            Evaluation.task_version == task_version,
            Evaluation.judge_version == judge_version,
        )
        .group_by(Candidate.version)
    )
    with transaction(engine) as connection:
        return {
            int(version): (float(mean), int(n)) for version, mean, n in connection.execute(query)
        }


def status_counts(engine: Engine) -> dict[tuple[str, str], int]:
    """(prompt, status) → versions, for the `candidates` gauge."""
    query = select(Candidate.prompt_name, Candidate.status, func.count()).group_by(
        Candidate.prompt_name, Candidate.status
    )
    with transaction(engine) as connection:
        return {(name, status): int(n) for name, status, n in connection.execute(query)}


def set_evidence(engine: Engine, prompt_name: str, version: int, evidence: dict[str, Any]) -> None:
    """Record why a candidate stands where it does (its scores in the run that judged it)."""
    with transaction(engine) as connection:
        connection.execute(
            update(Candidate)
            .where(
                Candidate.prompt_name == prompt_name,  # type: ignore[arg-type]
                Candidate.version == version,  # type: ignore[arg-type]
            )
            .values(evidence=evidence)
        )
