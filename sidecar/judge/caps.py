"""Spend control for live judging, per prompt: a rate cap (a token bucket) and a budget in USD
over any rolling hour. When a cap binds, judging waits: the events stay in the store and
nothing is dropped. Pure: times are seconds from the caller's clock, so tests drive an hour
without waiting one."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from sidecar.settings import PromptSpec, Settings

HOUR_S = 3600.0
CAPS = ("budget", "rate")


@dataclass(frozen=True)
class JudgingLimits:
    """A prompt's caps as configured: None is no cap."""

    budget_usd_per_hour: float | None
    max_per_minute: int | None
    max_event_age_hours: float

    @classmethod
    def of(cls, settings: Settings, spec: PromptSpec | None) -> JudgingLimits:
        """The prompt's `judging` block over the JUDGE_* settings."""
        block = spec.judging if spec is not None else None
        budget = settings.judge_budget_usd_per_hour
        rate = settings.judge_max_per_minute
        age = settings.judge_max_event_age_hours
        if block is not None:
            budget = block.budget_usd_per_hour or budget
            rate = block.max_per_minute or rate
            age = block.max_event_age_hours or age
        return cls(budget, rate, age)

    def describe(self) -> str:
        """One line for the start-up log."""
        budget = (
            f"at most ${self.budget_usd_per_hour:g} an hour"
            if self.budget_usd_per_hour is not None
            else "no spend cap"
        )
        rate = (
            f"at most {self.max_per_minute} judgments a minute"
            if self.max_per_minute is not None
            else "no rate cap"
        )
        return f"{budget}, {rate}; unjudged events older than {self.max_event_age_hours:g}h expire"


class RateCap:
    """`per_minute` judgments a minute on average, with a burst of at most a second's worth
    (at least one): any minute holds at most `per_minute` plus that burst."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.rate_per_s = per_minute / 60.0
        self.burst = max(1.0, self.rate_per_s)
        self.tokens = self.burst
        self.at = now

    def available(self, now: float) -> int:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate_per_s)
        self.at = max(self.at, now)
        return math.floor(self.tokens + 1e-9)

    def take(self, count: int) -> None:
        self.tokens -= count

    def give_back(self, count: int) -> None:
        self.tokens = min(self.burst, self.tokens + count)


class BudgetCap:
    """USD over any rolling hour, held within one judgment's price: a judgment starts only
    when the hour's spend, plus what the judgments in flight are expected to cost, plus one
    more, fits under the cap. The expected price is the dearest judgment seen so far; until
    one is seen, one judgment at a time finds it out.

    `others_usd` is spend this process did not make (earlier processes, other replicas), read
    from the store. A model with no price cannot be held by a budget: once one is seen the
    budget stops binding and the spend is reported as unknown (the rate cap still holds)."""

    def __init__(self, usd_per_hour: float) -> None:
        self.usd_per_hour = usd_per_hour
        self.spends: deque[tuple[float, float]] = deque()
        self.window_usd = 0.0
        self.others_usd = 0.0
        self.in_flight = 0
        self.price: float | None = None
        self.unpriced = False

    def spent(self, now: float) -> float:
        """What the last hour cost, as far as it is known."""
        while self.spends and self.spends[0][0] <= now - HOUR_S:
            self.window_usd -= self.spends.popleft()[1]
        if not self.spends:
            self.window_usd = 0.0
        return self.window_usd + self.others_usd

    def own_usd(self, now: float) -> float:
        self.spent(now)
        return self.window_usd

    def available(self, now: float, wanted: int, share: float = 1.0) -> int:
        """How many of `wanted` may start; `share`: the part of what is left of the hour's
        budget this process may take (replicas split it by the partitions they own, so
        replicas that have not yet read each other's spend cannot each spend all of it)."""
        if self.unpriced:
            return wanted
        room = (self.usd_per_hour - self.spent(now)) * share
        if self.price is None or self.price <= 0.0:
            return 1 if self.in_flight == 0 and room > 0.0 and wanted > 0 else 0
        fits = math.floor(room / self.price + 1e-9) - self.in_flight
        return max(0, min(wanted, fits))

    def finish(self, now: float, cost_usd: float, calls: int, unpriced_calls: int) -> None:
        """A judgment that started is done; what it cost."""
        self.in_flight = max(0, self.in_flight - 1)
        if unpriced_calls:
            self.unpriced = True
        if calls and cost_usd > 0.0:
            self.spends.append((now, cost_usd))
            self.window_usd += cost_usd
            self.price = max(self.price or 0.0, cost_usd)


class JudgeCaps:
    """Both caps of one prompt; `admit` says how many judgments may start now and which cap
    held back the rest."""

    def __init__(self, limits: JudgingLimits, now: float) -> None:
        self.limits = limits
        self.rate = RateCap(limits.max_per_minute, now) if limits.max_per_minute else None
        self.budget = BudgetCap(limits.budget_usd_per_hour) if limits.budget_usd_per_hour else None
        self.binding: set[str] = set()

    def admit(self, wanted: int, now: float, share: float = 1.0) -> int:
        """Reserve up to `wanted` judgments; `release` the ones that find no event. `share`:
        this replica's part of the budget (see `BudgetCap.available`)."""
        allowed = wanted
        self.binding = set()
        if self.rate is not None:
            by_rate = self.rate.available(now)
            if by_rate < allowed:
                allowed = by_rate
                self.binding.add("rate")
        if self.budget is not None:
            by_budget = self.budget.available(now, allowed, share)
            if by_budget < allowed:
                allowed = by_budget
                self.binding.add("budget")
        allowed = max(0, allowed)
        if self.rate is not None:
            self.rate.take(allowed)
        if self.budget is not None:
            self.budget.in_flight += allowed
        return allowed

    def release(self, count: int) -> None:
        """Reserved judgments that never started."""
        if count <= 0:
            return
        if self.rate is not None:
            self.rate.give_back(count)
        if self.budget is not None:
            self.budget.in_flight = max(0, self.budget.in_flight - count)

    def finish(self, now: float, cost_usd: float, calls: int, unpriced_calls: int) -> None:
        if self.budget is not None:
            self.budget.finish(now, cost_usd, calls, unpriced_calls)
