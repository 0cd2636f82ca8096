"""Model failures told once and then counted (llm/failures.py), and when a run's models, not its
prompt, are why it made nothing (optimize/outcome.py). A hand-driven clock; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sidecar.llm.failures import MAX_MESSAGE_CHARS, FailureLog
from sidecar.optimize.outcome import hopeless, run_failure

START = datetime(2026, 11, 29, 7, 40, tzinfo=UTC)
CAUSE = "Missing credentials. Please pass an `api_key`."
ERROR = f"judge model call failed: AuthenticationError: {CAUSE}"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fail(log: FailureLog, role: str = "judge", kind: str = "AuthenticationError") -> object:
    return log.failed(role, kind, CAUSE, ERROR)


def test_the_first_failure_is_told_at_once_with_its_cause() -> None:
    clock = Clock()
    notice = FailureLog(clock=clock).failed("judge", "AuthenticationError", CAUSE, ERROR)
    assert notice is not None
    assert (notice.first, notice.count, notice.at) == (True, 1, START)
    line = notice.line()
    assert line.startswith(f"judge model call failed: AuthenticationError: {CAUSE}")
    assert "\n" not in line


def test_later_failures_are_counted_and_told_at_most_once_a_minute() -> None:
    clock = Clock()
    log = FailureLog(clock=clock)
    fail(log)
    told = []
    for _ in range(25):  # one every 5 s for 125 s
        clock.advance(5)
        notice = fail(log)
        if notice is not None:
            told.append(notice)
    assert [(n.at - START).total_seconds() for n in told] == [60, 120]
    assert [n.count for n in told] == [12, 12]  # every failure since the last line
    assert not any(n.first for n in told)
    assert told[1].since == told[0].at
    assert told[0].line() == (
        f"judge model call failed 12 times more in 60s: AuthenticationError: {CAUSE}"
    )
    assert log.failures == 26


def test_each_role_and_kind_is_told_on_its_own() -> None:
    log = FailureLog(clock=Clock())
    assert fail(log, "judge", "AuthenticationError") is not None
    assert fail(log, "judge", "timeout") is not None
    assert fail(log, "task", "AuthenticationError") is not None
    assert fail(log, "judge", "timeout") is None


def test_pending_tells_what_was_counted_since_the_last_notice_once() -> None:
    clock = Clock()
    log = FailureLog(clock=clock)
    fail(log)
    fail(log, "task", "timeout")
    assert log.pending() == []  # nothing counted beyond the first notices
    for _ in range(3):
        clock.advance(1)
        fail(log)
    [notice] = log.pending()
    assert (notice.role, notice.count, notice.since, notice.at) == ("judge", 3, START, clock.now)
    assert log.pending() == []


def test_a_cause_is_kept_on_one_line_and_cut() -> None:
    notice = FailureLog(clock=Clock()).failed("task", "BadRequestError", "a\nb  " + "x" * 999, "e")
    assert notice is not None
    assert notice.message.startswith("a b x")
    assert len(notice.message) == MAX_MESSAGE_CHARS


def test_an_answer_ends_its_roles_failures_in_a_row_only() -> None:
    log = FailureLog(clock=Clock())
    for _ in range(2):
        fail(log, "judge")
        fail(log, "reflection")
    log.succeeded("judge")
    assert log.failed_in_a_row == {"judge": 0, "reflection": 2}
    assert log.answered == {"judge": 1}
    assert log.last_error == ERROR


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        FailureLog(interval_s=0)


def test_a_run_gives_up_on_a_model_that_never_answered_and_fails_in_a_row() -> None:
    log = FailureLog(clock=Clock())
    fail(log, "reflection")
    fail(log, "reflection")
    assert not hopeless(log)
    fail(log, "reflection")
    assert hopeless(log)


def test_a_run_keeps_going_on_a_model_that_answered_before() -> None:
    log = FailureLog(clock=Clock())
    log.succeeded("task")
    for _ in range(5):
        fail(log, "task", "APIConnectionError")
    assert not hopeless(log)  # an outage mid-run: the evaluations say what they could not score


def test_a_run_fails_when_it_made_nothing_and_its_models_failed() -> None:
    log = FailureLog(clock=Clock())
    assert run_failure(log, 0, "no_progress") is None  # nothing failed: an honest no-progress
    log.failed("reflection", "AuthenticationError", CAUSE, f"reflection model: {CAUSE}")
    assert run_failure(log, 0, "model_error") == (
        f"no proposal could be made: reflection model: {CAUSE}"
    )
    assert run_failure(log, 1, "no_progress") is None  # it made a version
    assert run_failure(log, 0, "perfect_on_pareto") is None  # there was nothing to improve
    log.succeeded("reflection")
    assert run_failure(log, 0, "no_progress") is None  # the replies, not the provider, failed
