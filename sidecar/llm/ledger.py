"""What every role has spent: requests, tokens and USD. Tokens are counted even where the
model has no price in litellm's cost map; those requests are counted as unpriced."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RoleSpend:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_requests: int = 0


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

    def snapshot(self) -> dict[str, RoleSpend]:
        with self._lock:
            return dict(self._spend)

    def cost_usd(self, *roles: str) -> float:
        """USD spent by the given roles (every role when none is named)."""
        spend = self.snapshot()
        return sum(s.cost_usd for role, s in spend.items() if not roles or role in roles)
