"""What a store must look like after any crash, read from its tables: each event once, each
event judged once, and a candidate pool every row of which the lifecycle could have produced.
A list of problems in words (empty when consistent), so a failure names every one at once."""

from __future__ import annotations

import itertools
from collections import Counter

from sqlalchemy import Engine, func, select

from sidecar.promote.lifecycle import MOVES, Status
from sidecar.store.candidates import candidates_of
from sidecar.store.repository import transaction
from sidecar.store.tables import AuditEntry, Event, Judgment, OptimizationRun


def judgments_per_event(engine: Engine) -> Counter[int]:
    """Judgment rows of each stored event (any judge version, any status); 0 where none."""
    with transaction(engine) as connection:
        events = connection.execute(select(Event.id)).scalars().all()
        counted = connection.execute(
            select(Judgment.event_row_id, func.count()).group_by(Judgment.event_row_id)
        ).all()
    found: Counter[int] = Counter({int(row_id): 0 for row_id in events})
    found.update({int(row_id): int(n) for row_id, n in counted})
    return found


def judged_ok(engine: Engine) -> int:
    query = select(func.count()).select_from(Judgment).where(Judgment.status == "ok")  # type: ignore[arg-type]
    with transaction(engine) as connection:
        return int(connection.execute(query).scalar_one())


def run_statuses(engine: Engine) -> dict[int, str]:
    with transaction(engine) as connection:
        rows = connection.execute(select(OptimizationRun.id, OptimizationRun.status)).all()
    return {int(run_id): status for run_id, status in rows}


def pool_problems(engine: Engine, name: str) -> list[str]:
    """Every way the pool breaks the lifecycle: an unknown status, not exactly one active
    version, a parent or an origin run that does not exist, or a version whose audit trail is
    not a chain of legal moves from its creation to its status (a half-written candidate)."""
    versions = candidates_of(engine, name)
    runs = run_statuses(engine)
    with transaction(engine) as connection:
        query = select(AuditEntry).where(AuditEntry.prompt_name == name).order_by(AuditEntry.id)  # type: ignore[arg-type]
        trail = [AuditEntry.model_validate(row._mapping) for row in connection.execute(query)]
    problems = []
    active = [v for v, row in versions.items() if row.status == Status.ACTIVE]
    if len(active) != 1:
        problems.append(f"{len(active)} active versions: {active}")
    for version, row in versions.items():
        if row.status not in set(Status):
            problems.append(f"v{version} has the unknown status {row.status!r}")
        missing = [p for p in row.parents if p not in versions]
        if missing:
            problems.append(f"v{version} has parents that do not exist: {missing}")
        if row.origin_run_id is not None and row.origin_run_id not in runs:
            problems.append(f"v{version} comes from run {row.origin_run_id}, which does not exist")
        moves = [(e.from_status, e.to_status) for e in trail if e.version == version]
        problems.extend(_trail_problems(version, row.status, moves))
    return problems


def _trail_problems(version: int, status: str, moves: list[tuple[str | None, str]]) -> list[str]:
    """A version is created (from nothing to pool, or to active for a seed), then each move
    starts where the last ended and is one the lifecycle allows, ending at its status."""
    if not moves or moves[0][0] is not None or moves[0][1] not in (Status.POOL, Status.ACTIVE):
        return [f"v{version} has no creation in its audit trail: {moves}"]
    problems = []
    for (_, ended), (start, end) in itertools.pairwise(moves):
        if start != ended or (Status(start), Status(end)) not in MOVES:
            problems.append(f"v{version} moved {start} -> {end} after reaching {ended}")
    if moves[-1][1] != status:
        problems.append(f"v{version} is {status} but its audit trail ends at {moves[-1][1]}")
    return problems
