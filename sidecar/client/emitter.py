"""Feeding the serving app's traffic back to the sidecar without ever slowing or breaking it.

`emit()` builds a valid TrafficEvent, samples it by its event id (the sidecar's own rule, so the
app and the sidecar keep the same events at the same rate), serializes it, and puts it on a
bounded queue without waiting; a daemon thread sends the queue to Kafka. A full queue, a down
broker or bad input costs the app one dropped, counted event, never a blocked or failed request.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from sidecar.client.checks import checked_name, checked_rate, checked_size
from sidecar.events import MAX_EVENT_BYTES, TrafficEvent
from sidecar.ingest.sampling import is_sampled

DEFAULT_QUEUE_SIZE = 10_000
CLOSE_TIMEOUT_S = 10.0

Record = tuple[bytes, bytes]
"""(key, value) of one event: its id and its JSON."""


class TrafficEmitter:
    """Sends sampled TrafficEvents of one prompt to `topic`. `kafka_options` go to kafka-python's
    KafkaProducer (security_protocol, sasl_mechanism, sasl_plain_username, sasl_plain_password,
    ssl_cafile, acks, linger_ms, …); with no security option among them, the sidecar's
    SIDECAR_KAFKA_SECURITY_PROTOCOL, _SASL_* and _SSL_CAFILE variables, when set, supply them."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "gepa.traffic",
        *,
        prompt_name: str,
        sample_rate: float = 1.0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        **kafka_options: Any,
    ) -> None:
        self.prompt_name = checked_name(prompt_name)
        self.sample_rate = checked_rate(sample_rate)
        self._queue: queue.Queue[Record] = queue.Queue(
            maxsize=checked_size("queue_size", queue_size)
        )
        self._counting = threading.Lock()
        self._drops: Counter[str] = Counter()
        self._sent = 0
        self._sampled_out = 0
        self._closed = False
        # kafka-python takes ~0.15 s to import: paid here, once, not by `import sidecar.client`.
        from sidecar.client.sender import Sender

        self._sender = Sender(bootstrap_servers, topic, kafka_options, self._queue, self)
        self._sender.start()

    def emit(
        self,
        inputs: dict[str, str],
        output: str,
        prompt_version: int,
        *,
        trace: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Queue one event for sending; True when queued. False when sampled out (see
        `sampled_out`) or dropped (see `dropped`): never blocks, never raises."""
        if self._closed:
            self.count_drop("closed")
            return False
        event_id = uuid.uuid4()
        key = str(event_id)
        if self.sample_rate < 1.0 and not is_sampled(key, self.sample_rate):
            with self._counting:
                self._sampled_out += 1
            return False
        try:
            value = TrafficEvent(
                schema_version=1,
                event_id=event_id,
                prompt_name=self.prompt_name,
                prompt_version=prompt_version,
                timestamp=datetime.now(UTC),
                inputs=inputs,
                output=output,
                trace=trace,
                metadata=metadata,
            ).model_dump_json()
        except (ValidationError, ValueError, TypeError, RecursionError):
            self.count_drop("invalid")
            return False
        encoded = value.encode("utf-8")
        if len(encoded) > MAX_EVENT_BYTES:
            self.count_drop("too_large")
            return False
        try:
            self._queue.put_nowait((key.encode("ascii"), encoded))
        except queue.Full:
            self.count_drop("queue_full")
            return False
        return True

    @property
    def dropped(self) -> int:
        """Events not sent, in all: see `dropped_by_reason`."""
        with self._counting:
            return sum(self._drops.values())

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        """invalid, too_large, queue_full, unsent (the broker did not take it), closed."""
        with self._counting:
            return dict(self._drops)

    @property
    def sampled_out(self) -> int:
        """Events left out by `sample_rate` (the sidecar would have left them out too)."""
        with self._counting:
            return self._sampled_out

    @property
    def sent(self) -> int:
        """Events the broker acknowledged."""
        with self._counting:
            return self._sent

    @property
    def pending(self) -> int:
        """Events queued and not yet handed to the producer."""
        return self._queue.qsize()

    def count_drop(self, reason: str, count: int = 1) -> None:
        with self._counting:
            self._drops[reason] += count

    def count_sent(self) -> None:
        with self._counting:
            self._sent += 1

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Send what can be sent within `timeout_s`, then stop; what is left counts as unsent."""
        self._closed = True
        self._sender.stop(timeout_s)

    def __enter__(self) -> TrafficEmitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
