"""Model spend per prompt, purpose and minute, shared by every replica: the judge's hourly cap
reads it at start and as it runs, and `status` shows the last hour and day of each purpose."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from sidecar.errors import StoreError
from sidecar.store.repository import dialect_insert, transaction
from sidecar.store.tables import Spend

log = logging.getLogger(__name__)

PURPOSES = ("judge", "shadow", "optimize")
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class SpendTotal:
    """`cost_usd` counts priced calls only; with `unpriced_calls` the true spend is unknown."""

    cost_usd: float = 0.0
    calls: int = 0
    unpriced_calls: int = 0

    @property
    def known(self) -> bool:
        return self.unpriced_calls == 0


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def add_spend(
    connection: Connection,
    prompt_name: str,
    purpose: str,
    at: datetime,
    spend: SpendTotal,
) -> None:
    """Add to the minute's row, in the caller's transaction."""
    if not spend.calls:
        return
    statement = dialect_insert(connection)(Spend).values(
        prompt_name=prompt_name,
        purpose=purpose,
        minute=minute_of(at),
        cost_usd=spend.cost_usd,
        calls=spend.calls,
        unpriced_calls=spend.unpriced_calls,
    )
    excluded = statement.excluded
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["prompt_name", "purpose", "minute"],
            set_={
                "cost_usd": Spend.cost_usd + excluded.cost_usd,
                "calls": Spend.calls + excluded.calls,
                "unpriced_calls": Spend.unpriced_calls + excluded.unpriced_calls,
            },
        )
    )


def record_spend(
    engine: Engine, prompt_name: str, purpose: str, at: datetime, spend: SpendTotal
) -> None:
    with transaction(engine) as connection:
        add_spend(connection, prompt_name, purpose, at, spend)


def keep_spend(
    engine: Engine, prompt_name: str, purpose: str, at: datetime, spend: SpendTotal
) -> None:
    """Record what a shadow pass or a GEPA run spent when it ends, however it ends; a store
    that cannot take it is logged, so the pass's own outcome stands."""
    try:
        record_spend(engine, prompt_name, purpose, at, spend)
    except StoreError as exc:
        log.warning("cannot record %s spend of %s: %s", purpose, prompt_name, exc)


def spend_since(engine: Engine, prompt_name: str, purpose: str, since: datetime) -> SpendTotal:
    """Spend from `since` on; the minute that holds `since` counts whole (a cap errs high)."""
    with transaction(engine) as connection:
        return _total(connection, purpose, since, prompt_name)


def spend_summary(engine: Engine, now: datetime) -> dict[str, dict[str, dict[str, Any]]]:
    """Per purpose, the last hour's and the last day's spend over every prompt."""
    windows = {"last_hour": now - timedelta(hours=1), "last_day": now - timedelta(days=1)}
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    with transaction(engine) as connection:
        for purpose in PURPOSES:
            summary[purpose] = {}
            for name, since in windows.items():
                total = _total(connection, purpose, since)
                summary[purpose][name] = {**asdict(total), "known": total.known}
    return summary


def _total(
    connection: Connection, purpose: str, since: datetime, prompt_name: str | None = None
) -> SpendTotal:
    query = select(
        func.coalesce(func.sum(Spend.cost_usd), 0.0),
        func.coalesce(func.sum(Spend.calls), 0),
        func.coalesce(func.sum(Spend.unpriced_calls), 0),
    ).where(
        Spend.purpose == purpose,
        Spend.minute >= minute_of(since),  # type: ignore[operator]
    )
    if prompt_name is not None:
        query = query.where(Spend.prompt_name == prompt_name)
    cost, calls, unpriced = connection.execute(query).one()
    return SpendTotal(float(cost), int(calls), int(unpriced))
