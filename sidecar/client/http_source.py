"""The sidecar's `GET /v1/prompts/{name}/active`, asked every `poll_interval_s` with the held
document's ETag (its sha256) in If-None-Match: an unchanged prompt costs a 304 with no body.

The standard library's urllib is enough here, so the serving app needs no HTTP client of ours.
"""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request
from urllib.parse import quote

from sidecar.client.problems import one_line
from sidecar.client.receiver import MAX_DOCUMENT_BYTES, Receiver
from sidecar.client.retry import retry_delay

REQUEST_TIMEOUT_S = 5.0


class HttpSource:
    def __init__(self, base_url: str, name: str, poll_interval_s: float) -> None:
        self.url = f"{base_url}/v1/prompts/{quote(name, safe='')}/active"
        self.poll_interval_s = poll_interval_s
        self.description = f"http {self.url}"
        self.timeout_s = max(REQUEST_TIMEOUT_S, poll_interval_s)
        self._etag: str | None = None

    def run(self, receiver: Receiver, stopping: threading.Event) -> None:
        failures = 0
        while not stopping.is_set():
            failures = 0 if self.poll(receiver) else failures + 1
            stopping.wait(retry_delay(self.poll_interval_s, failures))

    def poll(self, receiver: Receiver) -> bool:
        """One conditional GET; False when the sidecar could not be asked (then the next try
        backs off)."""
        headers = {"Accept": "application/json"}
        if self._etag is not None:
            headers["If-None-Match"] = f'"{self._etag}"'
        request = urllib.request.Request(self.url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read(MAX_DOCUMENT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            return self._answered(receiver, exc.code)
        except (OSError, http.client.HTTPException) as exc:
            receiver.problem(f"cannot reach {self.url}: {one_line(exc)}")
            return False
        document = receiver.check(body, self.url)
        if document is not None:
            receiver.install(document)
            receiver.healthy()
            self._etag = document.sha256
        return True

    def _answered(self, receiver: Receiver, status: int) -> bool:
        if status == 304:
            receiver.healthy()
            return True
        if status == 404:
            receiver.problem(f"{self.url} serves nothing for this prompt (yet)")
            return True
        receiver.problem(f"{self.url} answered HTTP {status}")
        return False
