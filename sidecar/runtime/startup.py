"""Start-up steps that wait out an outage instead of exiting. As a native sidecar, the sidecar
starts before the chatbot and the kubelet holds the chatbot back until the sidecar is ready: a
sidecar that exits because the database or the broker is not there yet would keep the chatbot
down with it. So a step that needs one of them is retried, with a growing pause, until it
succeeds or a stop is asked for; the outage shows on /healthz's detail and in one log line per
distinct problem."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from sidecar.errors import BrokerError, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE_S = 1.0
LONGEST_PAUSE_S = 30.0
OUTAGES = (StoreError, BrokerError, SQLAlchemyError)
"""What a dependency that is not (yet) there raises; anything else is a bug and is raised."""


class StartupWait:
    """Runs start-up steps until each succeeds; `waiting_for` names the dependency that the
    step under way is waiting for (None when none is)."""

    def __init__(
        self,
        stopping: threading.Event,
        first_pause_s: float = FIRST_PAUSE_S,
        longest_pause_s: float = LONGEST_PAUSE_S,
    ) -> None:
        self.stopping = stopping
        self.first_pause_s = first_pause_s
        self.longest_pause_s = longest_pause_s
        self.waiting_for: str | None = None
        self.problem: str | None = None

    def until_done(self, dependency: str, step: Callable[[], T]) -> T | None:
        """Run `step` until it returns, and give what it returned; None when a stop was asked
        for first."""
        pause = self.first_pause_s
        while not self.stopping.is_set():
            try:
                done = step()
            except OUTAGES as exc:
                problem = " ".join(str(exc).split())[:300] or type(exc).__name__
                if problem != self.problem:
                    log.warning(
                        "waiting for %s: %s (retrying; the chatbot is not held back)",
                        dependency,
                        problem,
                    )
                self.waiting_for, self.problem = dependency, problem
            else:
                if self.waiting_for is not None:
                    log.info("%s answers; starting up", dependency)
                self.waiting_for = self.problem = None
                return done
            self.stopping.wait(pause)
            pause = min(pause * 2, self.longest_pause_s)
        return None
