"""Start-up steps wait out an outage of a dependency, one log line per distinct problem, and
give what the step gave, or None when a stop is asked for first; anything that is not an
outage is raised."""

from __future__ import annotations

import logging
import threading

import pytest

from sidecar.errors import BrokerError, StoreError
from sidecar.runtime.startup import StartupWait


class Flaky:
    """A step that fails with the given errors in turn, then succeeds."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.seen: list[str | None] = []

    def __call__(self, wait: StartupWait) -> str:
        self.calls += 1
        self.seen.append(wait.waiting_for)
        if self.errors:
            raise self.errors.pop(0)
        return "connected"


def quick(stopping: threading.Event | None = None) -> StartupWait:
    return StartupWait(stopping or threading.Event(), first_pause_s=0.0, longest_pause_s=0.0)


def test_an_outage_is_retried_until_the_step_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.runtime.startup")
    wait = quick()
    down = StoreError("database migration failed: connection refused")
    step = Flaky(down, StoreError(str(down)), BrokerError("cannot reach Kafka"))
    assert wait.until_done("database", lambda: step(wait)) == "connected"
    assert step.calls == 4
    assert step.seen == [None, "database", "database", "database"]
    assert wait.waiting_for is None and wait.problem is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "waiting for database: database migration failed: connection refused "
        "(retrying; the chatbot is not held back)",
        "waiting for database: cannot reach Kafka (retrying; the chatbot is not held back)",
    ]
    assert caplog.records[-1].getMessage() == "database answers; starting up"


def test_a_stop_ends_the_wait_and_says_so() -> None:
    stopping = threading.Event()
    wait = quick(stopping)

    def down() -> None:
        stopping.set()
        raise BrokerError("cannot reach Kafka at 127.0.0.1:1")

    assert wait.until_done("Kafka", down) is None
    assert wait.waiting_for == "Kafka"
    assert wait.problem == "cannot reach Kafka at 127.0.0.1:1"


def test_a_stop_before_the_first_try_runs_nothing() -> None:
    stopping = threading.Event()
    stopping.set()
    step = Flaky()
    wait = quick(stopping)
    assert wait.until_done("database", lambda: step(wait)) is None
    assert step.calls == 0


def test_what_is_not_an_outage_is_raised() -> None:
    wait = quick()
    with pytest.raises(ZeroDivisionError):
        wait.until_done("database", lambda: 1 / 0)


def test_the_pause_grows_to_its_cap() -> None:
    pauses: list[float] = []

    class Recording(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            pauses.append(timeout or 0.0)
            return False

    wait = StartupWait(Recording(), first_pause_s=1.0, longest_pause_s=5.0)
    step = Flaky(*(StoreError("down") for _ in range(5)))
    assert wait.until_done("database", lambda: step(wait))
    assert pauses == [1.0, 2.0, 4.0, 5.0, 5.0]
