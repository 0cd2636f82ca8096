"""A run's budget is a hard cap, because operators set it to bound a bill: metric calls (one
task call plus its judgment), USD across task, judge and reflection, and wall time; plus a
patience limit (iterations without a new frontier candidate).

USD is only known after a call returns, so the guard plans with the most expensive metric call
seen so far: it lets a batch start only if the batch would fit even at that price. Until the
first call has returned, calls start one at a time, so the price is learnt from a single call.
Unpriced models (self-hosted) cost 0 and are bounded by the other limits.

A stop of the process (an `Interrupt`) is checked wherever the budget is: from then on no new
call starts, and the stop reason is `interrupted`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.optimize.interrupt import Interrupt


@dataclass(frozen=True)
class Budget:
    max_metric_calls: int
    max_usd: float
    max_seconds: float
    patience: int = 20

    def __post_init__(self) -> None:
        if self.max_metric_calls < 1:
            raise ValueError("max_metric_calls must be at least 1")
        if self.max_usd < 0 or self.max_seconds <= 0 or self.patience < 1:
            raise ValueError("budget limits must be positive")


@dataclass
class Spend:
    """What a run has paid so far; `stop_reason` is set once a limit is reached."""

    metric_calls: int = 0
    usd: float = 0.0
    iterations_without_progress: int = 0
    stop_reason: str | None = None


@dataclass
class BudgetGuard:
    budget: Budget
    clock: Callable[[], float] = time.monotonic
    interrupt: Interrupt | None = None
    spend: Spend = field(default_factory=Spend)
    started: float = field(init=False)
    _max_call_usd: float = 0.0
    _max_reflection_usd: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.clock()

    def affordable(self, calls: int) -> int:
        """How many of `calls` metric calls may start now (0 once a limit is reached)."""
        if self._stopped() or calls <= 0:
            return 0
        if self.clock() - self.started >= self.budget.max_seconds:
            return self._stop("wall_time")
        remaining = self.budget.max_metric_calls - self.spend.metric_calls
        if remaining <= 0:
            return self._stop("metric_calls")
        usd_left = self.budget.max_usd - self.spend.usd
        if self.spend.metric_calls == 0:
            return 1 if usd_left > 0 or self.budget.max_usd == 0 else self._stop("usd")
        if self._max_call_usd > 0:
            # a hair of tolerance: 0.9 // 0.1 is 8.0 in binary floating point
            remaining = min(remaining, int(usd_left / self._max_call_usd + 1e-9))
            if remaining <= 0:
                return self._stop("usd")
        return min(calls, remaining)

    def _stopped(self) -> bool:
        """A limit was reached, or the run is interrupted (which then becomes the reason)."""
        if self.interrupted:
            self._stop("interrupted")
        return self.spend.stop_reason is not None

    def _stop(self, reason: str) -> int:
        self.spend.stop_reason = self.spend.stop_reason or reason
        return 0

    def record_calls(self, calls: int, usd: float) -> None:
        """Metric calls that were made, and what they cost in total."""
        if calls <= 0:
            return
        self.spend.metric_calls += calls
        self.spend.usd += usd
        self._max_call_usd = max(self._max_call_usd, usd / calls)

    def reflection_affordable(self) -> bool:
        """Whether a reflection call may start: it must fit even at the dearest one seen."""
        if self._stopped():
            return False
        if self._max_reflection_usd > 0 and (
            self.spend.usd + self._max_reflection_usd > self.budget.max_usd + 1e-12
        ):
            self._stop("usd")
            return False
        return True

    def record_usd(self, usd: float) -> None:
        """Spend that is not a metric call (reflection)."""
        self._max_reflection_usd = max(self._max_reflection_usd, usd)
        self.spend.usd += usd
        if usd > 0 and self.spend.usd >= self.budget.max_usd:
            self._stop("usd")

    def record_iteration(self, progressed: bool) -> None:
        self.spend.iterations_without_progress = (
            0 if progressed else self.spend.iterations_without_progress + 1
        )
        if self.spend.iterations_without_progress >= self.budget.patience:
            self._stop("no_progress")

    @property
    def interrupted(self) -> bool:
        return self.interrupt is not None and self.interrupt.is_set()

    @property
    def exhausted(self) -> bool:
        return self._stopped()
