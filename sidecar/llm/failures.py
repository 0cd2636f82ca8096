"""Model failures, told once and then counted: a provider that is down or refuses every call
would otherwise fill the log with a line per call, or (as it was) leave it silent.

The first failure of a role with a kind of error (`AuthenticationError`, `APIConnectionError`,
`timeout`, ...) is a notice at once; later ones of the same role and kind are counted, and the
first of them a full interval after the last notice is a notice again, carrying the count since
it. A notice is what the gateway logs and what a sink keeps (the database, for `status`): at
most one per role and kind per interval, so keeping it never costs a call's time. `pending()`
gives what was counted but not yet told, for a run that ends.

The log also keeps what a run needs to tell an outage from bad luck: per role, the calls that
answered and the failures in a row, and the last failure as a caller saw it. No I/O; the clock
is injected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

SUMMARY_INTERVAL_S = 60.0
MAX_MESSAGE_CHARS = 300


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FailureNotice:
    """`count` failures of `role` with `kind` since `since` (the last notice; for the first
    notice, `first` and a count of 1); `message` is the latest one's cause, in one line."""

    role: str
    kind: str
    message: str
    count: int
    first: bool
    at: datetime
    since: datetime

    def line(self) -> str:
        """The log line: the cause, and how many more were counted."""
        if self.first:
            return (
                f"{self.role} model call failed: {self.kind}: {self.message} "
                f"(more {self.kind} failures of the {self.role} model: a line a minute at most)"
            )
        seconds = (self.at - self.since).total_seconds()
        times = "once" if self.count == 1 else f"{self.count} times"
        return (
            f"{self.role} model call failed {times} more in {seconds:.0f}s: "
            f"{self.kind}: {self.message}"
        )


class FailureSink(Protocol):
    """Where notices are kept beyond the log (the database, so `status` can show them)."""

    def record(self, notice: FailureNotice) -> None: ...


@dataclass
class _Tally:
    told_at: datetime
    message: str
    unseen: int = 0


class FailureLog:
    """Rate-limits failure notices per (role, kind) and keeps per-role failure counts.
    Thread-safe: a gateway may be shared by the judge worker and the HTTP thread."""

    def __init__(
        self,
        interval_s: float = SUMMARY_INTERVAL_S,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive (got {interval_s})")
        self.interval_s = interval_s
        self.clock = clock
        self.failures = 0
        self.answered: dict[str, int] = {}  # role -> calls that answered
        self.failed_in_a_row: dict[str, int] = {}  # role -> failures since it last answered
        self.last_error: str | None = None
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._lock = threading.Lock()

    def failed(self, role: str, kind: str, message: str, error: str) -> FailureNotice | None:
        """Count a call that failed for good (after retries); the notice to log and keep when
        this is the first failure of its role and kind, or the first a full interval after the
        last notice. `message` is the cause; `error` the whole error as a caller sees it."""
        cause = " ".join(message.split())[:MAX_MESSAGE_CHARS]
        with self._lock:
            now = self.clock()
            self.failures += 1
            self.failed_in_a_row[role] = self.failed_in_a_row.get(role, 0) + 1
            self.last_error = error
            tally = self._tallies.get((role, kind))
            if tally is None:
                self._tallies[role, kind] = _Tally(told_at=now, message=cause)
                return FailureNotice(role, kind, cause, 1, True, now, now)
            tally.unseen += 1
            tally.message = cause
            if (now - tally.told_at).total_seconds() < self.interval_s:
                return None
            return self._told(role, kind, tally, now)

    def succeeded(self, role: str) -> None:
        """A call of `role` answered: its failures in a row end (the per-kind tallies stay, so
        a flapping provider still gets a line a minute at most)."""
        with self._lock:
            self.answered[role] = self.answered.get(role, 0) + 1
            self.failed_in_a_row[role] = 0

    def pending(self) -> list[FailureNotice]:
        """Notices for every failure counted since its last notice, whatever the interval: for
        the end of a run, so the count it leaves behind is whole."""
        with self._lock:
            now = self.clock()
            return [
                self._told(role, kind, tally, now)
                for (role, kind), tally in self._tallies.items()
                if tally.unseen
            ]

    def _told(self, role: str, kind: str, tally: _Tally, now: datetime) -> FailureNotice:
        notice = FailureNotice(role, kind, tally.message, tally.unseen, False, now, tally.told_at)
        tally.told_at, tally.unseen = now, 0
        return notice
