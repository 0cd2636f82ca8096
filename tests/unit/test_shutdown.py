"""The bounded stop: one deadline shared by every part, all parts stopped at once, and the parts
that have not stopped by the deadline named (abandoned) rather than waited for."""

from __future__ import annotations

import threading

from sidecar.runtime.shutdown import Deadline, Stop, stop_together
from tests.helpers import scaled


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_counts_down_and_never_below_zero() -> None:
    clock = Clock()
    deadline = Deadline.after(3.0, clock)
    assert deadline.remaining() == 3.0
    clock.now += 1.0
    assert deadline.remaining() == 2.0
    clock.now += 5.0
    assert deadline.remaining() == 0.0


def test_an_earlier_deadline_keeps_time_back_for_a_last_step() -> None:
    clock = Clock()
    deadline = Deadline.after(3.0, clock)
    workers = deadline.earlier(0.75)
    assert workers.remaining() == 2.25
    clock.now += 2.5
    assert workers.remaining() == 0.0
    assert deadline.remaining() == 0.5  # still there for the HTTP server


def test_every_part_is_given_what_is_left_of_the_one_deadline() -> None:
    clock = Clock()
    deadline = Deadline.after(8.0, clock)
    clock.now += 3.0  # the stop began when the signal came, not when the parts are asked
    given: dict[str, float] = {}

    def stop_for(name: str) -> Stop:
        def stop(timeout: float) -> bool:
            given[name] = timeout
            return True

        return stop

    names = ("scheduler", "judge worker", "consumer")
    assert stop_together({name: stop_for(name) for name in names}, deadline) == []
    assert given == dict.fromkeys(names, 5.0)


def test_the_parts_stop_at_once_not_one_after_another() -> None:
    together = threading.Barrier(3, timeout=scaled(10))

    def stop(timeout: float) -> bool:
        together.wait()  # returns only once all three stops are under way
        return True

    deadline = Deadline.after(scaled(10))
    assert stop_together({"a": stop, "b": stop, "c": stop}, deadline) == []


def test_what_has_not_stopped_by_the_deadline_is_named_and_left_behind() -> None:
    released = threading.Event()
    stopped: list[str] = []

    def stuck(timeout: float) -> bool:
        released.wait()  # a Kafka call that ignores the timeout it was given
        return True

    def prompt(timeout: float) -> bool:
        stopped.append("relay")
        return True

    try:
        abandoned = stop_together({"relay": prompt, "consumer": stuck}, Deadline.after(0.3))
    finally:
        released.set()
    assert abandoned == ["consumer"]
    assert stopped == ["relay"]


def test_a_part_that_says_it_did_not_stop_or_whose_stop_raised_is_named() -> None:
    def late(timeout: float) -> bool:
        return False  # joined for its time, still running

    def broken(timeout: float) -> bool:
        raise RuntimeError("the producer was already closed")

    def fine(timeout: float) -> bool:
        return True

    deadline = Deadline.after(scaled(10))
    parts = {"judge worker": late, "outbox relay": broken, "scheduler": fine}
    assert stop_together(parts, deadline) == ["judge worker", "outbox relay"]
