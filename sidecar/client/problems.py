"""Logging a background thread's troubles without flooding the app's log: each distinct problem
once, until the thing works again; an outage of hours writes one line, not one a second."""

from __future__ import annotations

import logging

MAX_REMEMBERED = 100

log = logging.getLogger("sidecar.client")


def one_line(error: BaseException) -> str:
    """An exception's text on a single line, whatever the library put in it."""
    return " ".join(str(error).split()) or type(error).__name__


class ProblemLog:
    def __init__(self, subject: str) -> None:
        self.subject = subject
        self._seen: set[str] = set()

    def report(self, text: str) -> None:
        """Log `text` as a warning unless it was logged since the last `clear`."""
        if text in self._seen:
            return
        if len(self._seen) >= MAX_REMEMBERED:
            self._seen.clear()
        self._seen.add(text)
        log.warning("%s: %s", self.subject, text)

    def clear(self) -> None:
        """It works again: a later problem is news."""
        if self._seen:
            log.info("%s: working again", self.subject)
            self._seen.clear()
