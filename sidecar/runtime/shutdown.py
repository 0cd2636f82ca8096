"""A bounded stop. After SIGTERM, Kubernetes waits terminationGracePeriodSeconds and then kills
the container mid-write; so every part of the sidecar stops against one shared deadline
(SHUTDOWN_GRACE_S from the signal), all parts at once rather than one after another, and a part
that has not stopped by then is abandoned (its threads are daemons) and named, so the process
can exit in time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

Stop = Callable[[float], bool]
"""Stops one part, waiting at most the given seconds; True once that part has stopped."""


@dataclass(frozen=True)
class Deadline:
    """A moment on `clock` (monotonic seconds) that every part's stop shares."""

    at: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - self.clock())

    def earlier(self, seconds: float) -> Deadline:
        """This deadline moved `seconds` sooner: what must be done before a last step."""
        return Deadline(self.at - seconds, self.clock)


def stop_together(stops: Mapping[str, Stop], deadline: Deadline) -> list[str]:
    """Run every part's stop at once, each on a daemon thread of its own and given what is left
    of `deadline`; the names (in the order given) of the parts that have not stopped by then,
    or whose stop raised."""
    stopped: dict[str, bool] = {}

    def stop_one(name: str, stop: Stop) -> None:
        try:
            stopped[name] = stop(deadline.remaining())
        except Exception:
            log.exception("stopping the %s failed", name)
            stopped[name] = False

    threads = [
        threading.Thread(target=stop_one, args=(name, stop), name=f"stop-{name}", daemon=True)
        for name, stop in stops.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(deadline.remaining())
    return [name for name in stops if not stopped.get(name, False)]
