"""Versions staged in a real store the way the sidecar's own parts leave them: bred by the
optimizer, moved through the shadow gate by the shadow runner, approved by a person. The tests
of decisions, the API, the CLI and the relay start from these, so they all start from the same
lifecycle the product walks, written once."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from sidecar.promote.lifecycle import Actor
from sidecar.store.candidates import candidates_of, insert_candidate, mark_proposed
from sidecar.store.promotions import Activation, approve, transition
from sidecar.store.repository import transaction
from sidecar.store.tables import AuditEntry, Candidate, OutboxEntry

NAME = "customer-care"
TARGETS = ("file", "kafka", "http")
SHADOW_FIGURES: dict[str, Any] = {
    "shadow_mean": 0.8,
    "champion_mean": 0.6,
    "n": 40,
    "p_value": 0.01,
    "mode": "pointwise",
}
"""What the shadow gate keeps under evidence["shadow"] when a version passes it."""

GATE_PATH = ("pool", "proposed", "shadow", "awaiting_approval")
EDITS = itertools.count(1)


def add_version(
    engine: Engine,
    status: str,
    *,
    name: str = NAME,
    components: dict[str, str] | None = None,
    now: datetime | None = None,
    shadow: dict[str, Any] = SHADOW_FIGURES,
) -> int:
    """A new version brought to `status` (pool, proposed, shadow or awaiting_approval) the way
    the optimizer and the shadow runner do, with `shadow` as the gate's evidence when it
    passes. Each call's components differ unless given, as bred children's do."""
    now = now or datetime.now(UTC)
    components = components or {"system_prompt": f"Help, edit {next(EDITS)}."}
    version = insert_candidate(engine, name, components, [1], None, "edit", [], now).version
    for step in GATE_PATH[1 : GATE_PATH.index(status) + 1]:
        if step == "proposed":
            mark_proposed(engine, name, [version], "beats the champion", now)
        else:
            evidence = {"shadow": shadow} if step == "awaiting_approval" else None
            assert transition(
                engine, name, version, step, actor=Actor.SHADOW, by="shadow", reason="gate",
                now=now, evidence=evidence,
            )  # fmt: skip
    return version


def approved(
    engine: Engine,
    version: int,
    *,
    name: str = NAME,
    by: str = "alice",
    note: str | None = None,
    targets: Sequence[str] = TARGETS,
) -> Activation:
    """A person's approval of a gated version committed through the store, as the CLI or the
    API would commit it, owed to `targets`."""
    return approve(
        engine, name, version, by=by, note=note, force=False, targets=targets,
        now=datetime.now(UTC),
    )  # fmt: skip


def statuses(engine: Engine, name: str = NAME) -> dict[int, str]:
    return {version: row.status for version, row in candidates_of(engine, name).items()}


def snapshot(engine: Engine) -> tuple[list[Any], ...]:
    """Every row a decision could change, to show that a refused one changed nothing."""
    tables = []
    with transaction(engine) as connection:
        for model in (Candidate, AuditEntry, OutboxEntry):
            rows = connection.execute(select(model).order_by(model.id))  # type: ignore[arg-type]
            tables.append([tuple(row) for row in rows])
    return tuple(tables)


def table(engine: Engine, model: Any) -> list[Any]:
    """A table's rows as its models, oldest first."""
    with transaction(engine) as connection:
        query = select(model).order_by(model.id)
        return [model.model_validate(row._mapping) for row in connection.execute(query)]
