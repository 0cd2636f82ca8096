"""The TrafficEmitter's daemon thread: from its queue to a KafkaProducer.

The producer is built when the first event waits, and built again (after a growing pause) when
it cannot be built or a send fails; meanwhile the queue fills and the emitter drops and counts.
acks=1 without idempotence: a duplicate is harmless (the sidecar keeps each event id once), and
an idempotent producer whose broker lost its state fails until rebuilt.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any, Protocol

from kafka import KafkaProducer

from sidecar.client.kafka_clients import build_client, checked_options
from sidecar.client.problems import ProblemLog, one_line
from sidecar.client.retry import retry_delay
from sidecar.client.security import with_env_security

CONNECT_TIMEOUT_MS = 5_000
MAX_BLOCK_MS = 5_000
REQUEST_TIMEOUT_MS = 10_000
DELIVERY_TIMEOUT_MS = 30_000
"""kafka-python wants it above linger_ms + request_timeout_ms."""
RETRY_INTERVAL_S = 0.5
TAKE_TIMEOUT_S = 0.2
"""How long the idle thread waits on the queue before looking whether it should stop."""
JOIN_GRACE_S = 0.5


class Counts(Protocol):
    def count_drop(self, reason: str, count: int = 1) -> None: ...

    def count_sent(self) -> None: ...


class Sender:
    """Owns the producer; only its own thread touches it."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        options: dict[str, Any],
        records: queue.Queue[tuple[bytes, bytes]],
        counts: Counts,
    ) -> None:
        self.topic = topic
        self._configs = {
            "bootstrap_servers": bootstrap_servers,
            "acks": 1,
            "enable_idempotence": False,
            "linger_ms": 5,
            "max_block_ms": MAX_BLOCK_MS,
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
            "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
            "bootstrap_timeout_ms": CONNECT_TIMEOUT_MS,
            **checked_options(KafkaProducer, with_env_security(options)),
        }
        self._records = records
        self._counts = counts
        self._problems = ProblemLog(f"traffic to {bootstrap_servers}/{topic}")
        self._producer: Any = None
        self._failures = 0
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._gave_up = False
        self._thread = threading.Thread(target=self._run, name="traffic-emitter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Send what is queued until `timeout_s` from now, then close the producer. A thread
        still stuck connecting then leaves what is queued to be counted here."""
        self._deadline = time.monotonic() + max(0.0, timeout_s)
        self._stopping.set()
        self._thread.join(timeout=max(0.0, timeout_s) + JOIN_GRACE_S)
        if self._thread.is_alive():
            self._count_leftovers()

    def _run(self) -> None:
        try:
            while not self._finished():
                if self._producer is None and not self._connect_when_needed():
                    continue
                try:
                    record = self._records.get(timeout=TAKE_TIMEOUT_S)
                except queue.Empty:
                    continue
                self._send(record)
        finally:
            self._shut_down()

    def _finished(self) -> bool:
        if not self._stopping.is_set():
            return False
        return self._gave_up or self._records.empty() or time.monotonic() >= self._deadline

    def _connect_when_needed(self) -> bool:
        """Build the producer once an event waits (an app that never emits never connects),
        without taking the event: while connecting, the queue alone holds what is pending."""
        if self._records.empty():
            self._stopping.wait(TAKE_TIMEOUT_S)
            return False
        return self._connected() is not None

    def _send(self, record: tuple[bytes, bytes]) -> None:
        key, value = record
        try:
            future = self._producer.send(self.topic, key=key, value=value)
        except Exception as exc:
            self._counts.count_drop("unsent")
            self._problems.report(f"send failed: {one_line(exc)}")
            self._discard()
            return
        future.add_callback(self._delivered)
        future.add_errback(self._failed)

    def _connected(self) -> Any:
        """The producer, built if need be; None once stopping ends the wait for a broker."""
        while self._producer is None:
            stopping = self._stopping.is_set()
            try:
                self._producer = build_client(KafkaProducer, **self._build_configs())
            except Exception as exc:
                self._failures += 1
                self._problems.report(f"cannot start a producer: {one_line(exc)}")
                if stopping or self._pause():
                    self._gave_up = True
                    return None
        return self._producer

    def _build_configs(self) -> dict[str, Any]:
        """While stopping, a connection attempt may take only the time left."""
        configs = dict(self._configs)
        if self._stopping.is_set():
            left_ms = int(max(0.0, self._deadline - time.monotonic()) * 1000)
            configs["bootstrap_timeout_ms"] = min(configs["bootstrap_timeout_ms"], left_ms)
        return configs

    def _pause(self) -> bool:
        """Wait before the next attempt; True when stopping cut the wait short."""
        return self._stopping.wait(retry_delay(RETRY_INTERVAL_S, self._failures))

    def _delivered(self, _metadata: object) -> None:
        self._failures = 0
        self._problems.clear()
        self._counts.count_sent()

    def _failed(self, error: BaseException) -> None:
        self._counts.count_drop("unsent")
        self._problems.report(f"delivery failed: {one_line(error)}")

    def _discard(self) -> None:
        """Drop the producer without waiting; the next event builds a new one after a pause."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(timeout=0)
        self._failures += 1
        self._pause()

    def _shut_down(self) -> None:
        """Flush and close within the deadline; whatever is still queued counts as unsent."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.flush(timeout=max(0.0, self._deadline - time.monotonic()))
            with contextlib.suppress(Exception):
                producer.close(timeout=max(0.0, self._deadline - time.monotonic()))
        self._count_leftovers()

    def _count_leftovers(self) -> None:
        left = 0
        while True:
            try:
                self._records.get_nowait()
            except queue.Empty:
                break
            left += 1
        if left:
            self._counts.count_drop("unsent", left)
