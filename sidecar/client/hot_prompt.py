"""The serving app's view of one managed prompt: the published version, swapped in without a
restart, read without a lock on every request.

    prompt = HotPrompt("customer-care", "file:///srv/prompts/customer-care.json",
                       template=[{"role": "system", "content": "{system_prompt}"},
                                 {"role": "user", "content": "{user_message}"}],
                       fallback={"system_prompt": "You are a helpful agent."}).start()
    messages = prompt.render(user_message=text)      # the published version, or the fallback

A watcher thread owns the source; whatever goes wrong there (a down sidecar, a garbled file, a
raising callback) is logged and retried, and the app keeps the last good document. Nothing
here raises into the app after construction, except `render` given inputs that are not text.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from sidecar.client.checks import (
    checked_components,
    checked_name,
    checked_positive,
    checked_template,
)
from sidecar.client.problems import one_line
from sidecar.client.receiver import ChangeCallback, Receiver
from sidecar.client.retry import retry_delay
from sidecar.client.sources import source_for
from sidecar.client.template import render_task
from sidecar.errors import InputError
from sidecar.events import PromptDocument

log = logging.getLogger("sidecar.client")

CLOSE_TIMEOUT_S = 10.0


class HotPrompt:
    """One prompt from one source (file://, http:// or kafka://, see `sources.py`), with a
    bundled fallback until the first document arrives. `kafka_options` go to kafka-python's
    KafkaConsumer (security_protocol, sasl_mechanism, sasl_plain_username, ssl_cafile, …); with
    no security option among them, the sidecar's SIDECAR_KAFKA_SECURITY_PROTOCOL, _SASL_* and
    _SSL_CAFILE variables, when set, supply them (see `security.py`)."""

    def __init__(
        self,
        name: str,
        source: str,
        *,
        template: list[dict[str, str]] | None = None,
        fallback: dict[str, str] | None = None,
        poll_interval_s: float = 1.0,
        **kafka_options: Any,
    ) -> None:
        self.name = checked_name(name)
        self.poll_interval_s = checked_positive("poll_interval_s", poll_interval_s)
        messages = checked_template(template)
        self._task = {"messages": messages} if messages else None
        self._fallback = checked_components(fallback)
        self._receiver = Receiver(self.name)
        self._source = source_for(source, self.name, self.poll_interval_s, kafka_options)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HotPrompt:
        """Start watching the source and return at once; the fallback serves until a document
        arrives, however long the source stays unreachable."""
        if self._thread is None and not self._stopping.is_set():
            self._thread = threading.Thread(
                target=self._watch, name=f"hot-prompt-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop watching (waiting at most `timeout_s` for the watcher to let go of the source);
        the last document keeps being served."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def __enter__(self) -> HotPrompt:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def get(self) -> PromptDocument | None:
        """The current document (None until one arrives): one attribute read, no lock."""
        return self._receiver.document

    @property
    def version(self) -> int | None:
        document = self._receiver.document
        return None if document is None else document.version

    @property
    def components(self) -> dict[str, str]:
        """A copy of the current components, or of the fallback while nothing has loaded."""
        document = self._receiver.document
        return dict(self._fallback if document is None else document.components)

    def on_change(self, callback: ChangeCallback) -> ChangeCallback:
        """Call `callback(document)` in the watcher thread after each change of document (also
        usable as a decorator). An exception it raises is logged, never propagated."""
        self._receiver.add_callback(callback)
        return callback

    def render(self, **inputs: str) -> list[dict[str, str]]:
        """The chat messages for `inputs` with the current components, exactly as the sidecar's
        replays render them (the same function)."""
        wrong = sorted(key for key, value in inputs.items() if not isinstance(value, str))
        if wrong:
            raise InputError(f"render: inputs must be strings; not {', '.join(wrong)}")
        return render_task(self._task, self.components, inputs)

    def _watch(self) -> None:
        """Run the source until closed; a source that fails unexpectedly is restarted."""
        failures = 0
        while not self._stopping.is_set():
            try:
                self._source.run(self._receiver, self._stopping)
            except Exception as exc:
                log.debug("%s failed", self._source.description, exc_info=True)
                self._receiver.problem(
                    f"{self._source.description} failed ({one_line(exc)}); restarting it"
                )
            failures += 1
            self._stopping.wait(retry_delay(self.poll_interval_s, failures))
