"""What every role has spent: requests, tokens and USD. Tokens are counted even where the
model has no price in litellm's cost map; those requests are counted as unpriced."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RoleSpend:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_requests: int = 0


@dataclass
class Meter:
    """What one piece of work (e.g. one judgment, however many calls it took) spent."""

    cost_usd: float = 0.0
    calls: int = 0
    unpriced_calls: int = 0


_meter: ContextVar[Meter | None] = ContextVar("spend_meter", default=None)


def metering() -> Meter:
    """A new meter for the calls made from here in the current task and the tasks it starts
    (they copy its context); call it at the start of an asyncio task of its own."""
    meter = Meter()
    _meter.set(meter)
    return meter


class Ledger:
    """Thread-safe running totals per role; `snapshot()` is a consistent copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spend: dict[str, RoleSpend] = {}

    def record(
        self, role: str, prompt_tokens: int, completion_tokens: int, cost_usd: float | None
    ) -> None:
        with self._lock:
            spend = self._spend.get(role, RoleSpend())
            self._spend[role] = replace(
                spend,
                requests=spend.requests + 1,
                prompt_tokens=spend.prompt_tokens + prompt_tokens,
                completion_tokens=spend.completion_tokens + completion_tokens,
                cost_usd=spend.cost_usd + (cost_usd or 0.0),
                unpriced_requests=spend.unpriced_requests + (cost_usd is None),
            )
        meter = _meter.get()
        if meter is not None:
            meter.calls += 1
            meter.cost_usd += cost_usd or 0.0
            meter.unpriced_calls += cost_usd is None

    def snapshot(self) -> dict[str, RoleSpend]:
        with self._lock:
            return dict(self._spend)

    def total(self) -> RoleSpend:
        """Every role's spend added up."""
        spend = self.snapshot().values()
        return RoleSpend(
            requests=sum(s.requests for s in spend),
            prompt_tokens=sum(s.prompt_tokens for s in spend),
            completion_tokens=sum(s.completion_tokens for s in spend),
            cost_usd=sum(s.cost_usd for s in spend),
            unpriced_requests=sum(s.unpriced_requests for s in spend),
        )

    def cost_usd(self, *roles: str) -> float:
        """USD spent by the given roles (every role when none is named)."""
        spend = self.snapshot()
        return sum(s.cost_usd for role, s in spend.items() if not roles or role in roles)
