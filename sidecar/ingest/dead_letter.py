"""The dead-letter topic: every malformed record is re-published with why, and where it was."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError

from sidecar.client.kafka_clients import build_client
from sidecar.errors import BrokerError
from sidecar.events import MAX_EVENT_BYTES
from sidecar.ingest.batch import DeadLetter

REASON_HEADER = "gepa.dlq.reason"
DETAIL_HEADER = "gepa.dlq.detail"
SOURCE_HEADER = "gepa.dlq.source"
TRUNCATED_HEADER = "gepa.dlq.truncated-from-bytes"
PREVIEW_BYTES = 64 * 1024
SEND_TIMEOUT_S = 30.0


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    record = letter.record
    kept = [(name, value or b"") for name, value in (record.headers or [])]
    return [
        *kept,
        (REASON_HEADER, letter.rejection.reason.encode()),
        (DETAIL_HEADER, letter.rejection.detail.encode()),
        (SOURCE_HEADER, f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]


def _outgoing(letter: DeadLetter) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The value and headers to publish; an oversized value is cut to a preview, since the
    whole record stays in the source topic at the position in the headers."""
    headers = dead_letter_headers(letter)
    value = letter.record.value
    if value is not None and len(value) > MAX_EVENT_BYTES:
        headers.append((TRUNCATED_HEADER, str(len(value)).encode()))
        value = value[:PREVIEW_BYTES]
    return value, headers


class DeadLetterQueue:
    """Sends malformed records to the DLQ topic and waits until the broker has them."""

    def __init__(self, bootstrap_servers: str, topic: str, security: Mapping[str, str]) -> None:
        self.topic = topic
        self._bootstrap_servers = bootstrap_servers
        self._security = dict(security)
        self._producer: KafkaProducer | None = self._connect()

    def _connect(self) -> KafkaProducer:
        try:
            return build_client(
                KafkaProducer,
                bootstrap_servers=self._bootstrap_servers,
                acks="all",
                max_request_size=2 * MAX_EVENT_BYTES,
                linger_ms=5,
                **self._security,
            )
        except KafkaError as exc:
            raise BrokerError(f"cannot start the dead-letter producer: {exc}") from exc

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Publish all letters; raises BrokerError if any is not acknowledged.

        After a failure the producer is rebuilt on the next call: an idempotent producer whose
        broker lost its state (a restarted memory-only broker) otherwise never recovers.
        """
        if self._producer is None:
            self._producer = self._connect()
        producer = self._producer
        try:
            futures = [
                producer.send(self.topic, key=letter.record.key, value=value, headers=headers)
                for letter in letters
                for value, headers in [_outgoing(letter)]
            ]
            producer.flush(timeout=SEND_TIMEOUT_S)
            for future in futures:
                future.get(timeout=SEND_TIMEOUT_S)
        except KafkaError as exc:
            self.close(timeout=0)
            raise BrokerError(f"dead-letter publish failed: {exc}") from exc

    def close(self, timeout: float = SEND_TIMEOUT_S) -> None:
        """Close the producer; with timeout 0 (after a failure) unsent letters are dropped,
        since their batch is retried and sends them again."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                producer.close(timeout=timeout)
