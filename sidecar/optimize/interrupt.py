"""Interrupting a run: when the process is asked to stop, an optimization run (or a shadow pass)
ends at its next step instead of running on to its budget, because the process has only
SHUTDOWN_GRACE_S to exit before Kubernetes kills it mid-write.

From the moment the interrupt is set the budget guard refuses new calls, so the run leaves its
loop at the next budget check and records itself. Calls already in flight get what is left of
the grace but a reserve (what they return is kept, and never paid for twice); then they are
cancelled, so the run can still record how it ended before the deadline.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sidecar.errors import SidecarError

RECORD_RESERVE_S = 5.0
"""At most this much of a stop's time is kept back from calls in flight to record the run."""

POLL_S = 0.05

T = TypeVar("T")


class Interrupted(SidecarError):
    """A stop cut the run short; what it had paid for is stored."""


def in_flight_allowance(remaining_s: float) -> float:
    """How long calls in flight may still run when `remaining_s` are left before the stop's
    deadline: all of it but a reserve to record the run (half, at most RECORD_RESERVE_S)."""
    remaining = max(0.0, remaining_s)
    return remaining - min(remaining / 2, RECORD_RESERVE_S)


class Interrupt:
    """Set once, from any thread (the one stopping the process); read by the budget guard and
    by `interruptible`, on the run's own thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cancel_at = math.inf
        self._set = threading.Event()

    def set(self, within_s: float) -> None:
        """Ask the runs reading this to stop, all within `within_s` seconds from now."""
        self._cancel_at = min(self._cancel_at, self._clock() + in_flight_allowance(within_s))
        self._set.set()

    def is_set(self) -> bool:
        return self._set.is_set()

    def cancel_in(self) -> float | None:
        """Seconds until calls in flight are cancelled (0 once due); None while not set."""
        if not self._set.is_set():
            return None
        return max(0.0, self._cancel_at - self._clock())


async def interruptible(work: Coroutine[Any, Any, T], interrupt: Interrupt | None) -> T:
    """Await `work`; when `interrupt` says calls in flight are due to be cancelled and `work`
    has not ended by itself, cancel it and raise Interrupted."""
    if interrupt is None:
        return await work
    task = asyncio.ensure_future(work)
    cutter = asyncio.ensure_future(_cancel_when_due(task, interrupt))
    try:
        return await task
    except asyncio.CancelledError:
        if cutter.done() and not cutter.cancelled():
            raise Interrupted("a stop cancelled the calls still in flight") from None
        raise
    finally:
        cutter.cancel()


async def _cancel_when_due(task: asyncio.Future[Any], interrupt: Interrupt) -> None:
    while (wait := interrupt.cancel_in()) != 0.0:
        await asyncio.sleep(POLL_S if wait is None else min(wait, POLL_S))
    task.cancel()
