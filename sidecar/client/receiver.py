"""Where every source's documents arrive: checked, swapped in, announced.

A document is taken only when it is a valid PromptDocument (its sha256 matches its components)
for this prompt's name; anything else is refused and the last good one kept. What counts is the
source's latest word, not the version number: a rollback publishes an older version, and it must
win.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from pydantic import ValidationError

from sidecar.client.problems import ProblemLog
from sidecar.events import PromptDocument

log = logging.getLogger("sidecar.client")

ChangeCallback = Callable[[PromptDocument], object]
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
"""Far above any prompt; a larger body is not a document (and is not read further)."""


def refusal(error: ValidationError) -> str:
    """The first reason pydantic gives, on one line, without echoing the input back."""
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "document"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {' '.join(first['msg'].split())}{more}"


class Receiver:
    """Holds the current document in one attribute: readers take it without a lock, and the one
    watcher thread that writes it replaces it whole."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.document: PromptDocument | None = None
        self._callbacks: tuple[ChangeCallback, ...] = ()
        self._registering = threading.Lock()
        self._problems = ProblemLog(name)

    def add_callback(self, callback: ChangeCallback) -> None:
        with self._registering:
            self._callbacks = (*self._callbacks, callback)

    def check(self, raw: bytes, origin: str) -> PromptDocument | None:
        """The document `raw` holds, or None (refused and logged) when it is not a valid
        document of this prompt."""
        if len(raw) > MAX_DOCUMENT_BYTES:
            self.problem(f"{origin}: refused: over {MAX_DOCUMENT_BYTES} bytes")
            return None
        try:
            document = PromptDocument.model_validate_json(raw)
        except ValidationError as exc:
            self.problem(f"{origin}: refused: {refusal(exc)}")
            return None
        if document.name != self.name:
            self.problem(f"{origin}: refused: a document of {document.name!r}, not {self.name!r}")
            return None
        return document

    def install(self, document: PromptDocument) -> bool:
        """Serve `document` from now on; True when it differs from the current one (then every
        callback is called with it, in this thread; one that raises is logged and skipped)."""
        current = self.document
        if current is not None and (current.version, current.sha256) == (
            document.version,
            document.sha256,
        ):
            return False
        self.document = document
        log.info("%s: now serving v%d (sha256 %s)", self.name, document.version, document.sha256)
        for callback in self._callbacks:
            try:
                callback(document)
            except Exception:
                log.exception(
                    "%s: an on_change callback failed on v%d", self.name, document.version
                )
        return True

    def problem(self, text: str) -> None:
        """Log `text` once until the source is healthy again."""
        serving = f"v{self.document.version}" if self.document else "the fallback"
        self._problems.report(f"{text}; serving {serving}")

    def healthy(self) -> None:
        """The source answered: a later problem is news again."""
        self._problems.clear()


class Source(Protocol):
    """Runs in the HotPrompt's thread until `stopping` is set, handing what it reads to the
    receiver; it never raises (a failure is a receiver problem, then a retry)."""

    description: str

    def run(self, receiver: Receiver, stopping: threading.Event) -> None: ...
