"""The HTTP target: the documents this replica serves at `GET /v1/prompts/{name}/active`.

Held in memory and kept in line with the store by the relay, so the serving app keeps getting
the last published prompt (and 304s) while the database is down: the sidecar must never make
the chatbot unready because of a failure on its side."""

from __future__ import annotations

import threading

from sidecar.events import PromptDocument


class ServedDocuments:
    """A publisher (target "http") whose delivery is swapping the served document."""

    target = "http"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._documents: dict[str, PromptDocument] = {}

    def get(self, name: str) -> PromptDocument | None:
        with self._lock:
            return self._documents.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._documents)

    def holds(self, document: PromptDocument, activation_id: int) -> bool:
        current = self.get(document.name)
        return current is not None and (current.version, current.sha256) == (
            document.version,
            document.sha256,
        )

    def publish(self, document: PromptDocument, activation_id: int) -> None:
        with self._lock:
            self._documents[document.name] = document

    def close(self) -> None:
        """Nothing to release: the documents live as long as the process."""
