"""Interrupting a run when the process stops: the time calls in flight get, the guard refusing
new calls from the moment of the stop, and the cancellation of what is still in flight."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.optimize.budget import Budget, BudgetGuard
from sidecar.optimize.interrupt import (
    RECORD_RESERVE_S,
    Interrupt,
    Interrupted,
    in_flight_allowance,
    interruptible,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("remaining", "allowance"),
    [(20.0, 15.0), (3.0, 1.5), (10.0, 5.0), (100.0, 100.0 - RECORD_RESERVE_S), (0.0, 0.0)],
)
def test_calls_in_flight_get_the_time_left_but_a_reserve_to_record_the_run(
    remaining: float, allowance: float
) -> None:
    assert in_flight_allowance(remaining) == allowance


def test_no_time_left_leaves_no_allowance() -> None:
    assert in_flight_allowance(-1.0) == 0.0


def test_an_interrupt_counts_down_from_when_it_is_set() -> None:
    clock = Clock()
    interrupt = Interrupt(clock)
    assert not interrupt.is_set()
    assert interrupt.cancel_in() is None
    interrupt.set(within_s=20.0)
    assert interrupt.is_set()
    assert interrupt.cancel_in() == 15.0
    clock.now += 10.0
    assert interrupt.cancel_in() == 5.0
    clock.now += 10.0
    assert interrupt.cancel_in() == 0.0


def test_a_second_stop_never_postpones_the_first() -> None:
    clock = Clock()
    interrupt = Interrupt(clock)
    interrupt.set(within_s=4.0)
    interrupt.set(within_s=60.0)
    assert interrupt.cancel_in() == 2.0
    interrupt.set(within_s=0.0)
    assert interrupt.cancel_in() == 0.0


# --- the guard --------------------------------------------------------------------------------


def guard(interrupt: Interrupt | None) -> BudgetGuard:
    return BudgetGuard(
        Budget(max_metric_calls=100, max_usd=1.0, max_seconds=60.0), Clock(), interrupt
    )


def test_an_interrupted_run_starts_no_new_call() -> None:
    interrupt = Interrupt(Clock())
    run = guard(interrupt)
    assert run.affordable(3) == 1  # the first call alone, to learn the price
    run.record_calls(1, 0.01)
    assert run.affordable(3) == 3
    assert run.reflection_affordable()
    assert not run.exhausted

    interrupt.set(within_s=10.0)
    assert run.interrupted
    assert run.affordable(3) == 0
    assert not run.reflection_affordable()
    assert run.exhausted
    assert run.spend.stop_reason == "interrupted"


def test_a_limit_reached_before_the_stop_stays_the_reason() -> None:
    interrupt = Interrupt(Clock())
    run = guard(interrupt)
    run.record_calls(1, 0.01)
    run.spend.metric_calls = 100
    assert run.affordable(1) == 0
    interrupt.set(within_s=10.0)
    assert run.exhausted
    assert run.spend.stop_reason == "metric_calls"


def test_a_guard_without_an_interrupt_is_never_interrupted() -> None:
    run = guard(None)
    assert not run.interrupted
    assert run.affordable(1) == 1


# --- cancelling what is in flight --------------------------------------------------------------


def test_work_that_ends_by_itself_within_the_allowance_keeps_its_result() -> None:
    clock = Clock()
    interrupt = Interrupt(clock)

    async def work() -> str:
        interrupt.set(within_s=60.0)  # the stop comes while the work is under way
        await asyncio.sleep(0.2)  # longer than the cutter's poll: it sees the allowance run
        return "recorded"

    assert asyncio.run(interruptible(work(), interrupt)) == "recorded"


def test_work_still_running_when_the_allowance_ends_is_cancelled() -> None:
    clock = Clock()
    interrupt = Interrupt(clock)
    cancelled: list[bool] = []

    async def stalled_call() -> str:
        try:
            await asyncio.Event().wait()  # a provider that never answers
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    async def main() -> str:
        task = asyncio.ensure_future(interruptible(stalled_call(), interrupt))
        await asyncio.sleep(0.1)
        interrupt.set(within_s=10.0)  # 5 s of allowance on the test's clock
        await asyncio.sleep(0.2)
        assert not task.done()  # the allowance has not run out
        clock.now += 5.0
        return await task

    with pytest.raises(Interrupted):
        asyncio.run(main())
    assert cancelled == [True]


def test_a_cancellation_from_elsewhere_is_not_an_interruption() -> None:
    interrupt = Interrupt(Clock())

    async def main() -> None:
        task = asyncio.ensure_future(interruptible(asyncio.Event().wait(), interrupt))
        await asyncio.sleep(0.1)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_without_an_interrupt_the_work_is_awaited_as_it_is() -> None:
    async def work() -> int:
        return 7

    assert asyncio.run(interruptible(work(), None)) == 7
