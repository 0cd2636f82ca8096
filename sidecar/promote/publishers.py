"""Where an activated version is delivered: a file beside the serving app, and the prompts topic.

Delivery is at least once from the outbox relay's side; `holds` makes it exactly once: after a
crash between delivering and marking the row delivered, the relay asks the target whether it
already has that activation before delivering again. The HTTP target lives in `served.py`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from pydantic import ValidationError

from sidecar.client.kafka_clients import build_client
from sidecar.client.security import kafka_security_options
from sidecar.errors import ConfigError, PublishError
from sidecar.events import PromptDocument
from sidecar.promote.documents import document_json
from sidecar.settings import Settings

ACTIVATION_HEADER = "gepa-activation"
CONTENT_TYPE = "application/json"
KAFKA_TIMEOUT_S = 30.0
FILE_MODE = 0o644
"""A published prompt is no secret (it is served over HTTP unauthenticated), and the serving app
reading the shared emptyDir may run as another user."""


class Publisher(Protocol):
    """One delivery target of activations (`target` is its name in settings.publish_targets)."""

    target: str

    def holds(self, document: PromptDocument, activation_id: int) -> bool:
        """Does the target already have this activation? (Asked before a retried delivery.)"""
        ...

    def publish(self, document: PromptDocument, activation_id: int) -> None:
        """Deliver, or raise a one-line PublishError."""
        ...

    def close(self) -> None: ...


def one_line(error: BaseException) -> str:
    """A client's error text on a single line, whatever the library put in it."""
    return " ".join(str(error).split()) or type(error).__name__


class FilePublisher:
    """`<publish_dir>/<name>.json`: the serving app reads it whenever it likes, so it is replaced
    atomically (a reader sees the old document or the new one, never a part) and made durable
    before the delivery counts."""

    target = "file"

    def __init__(self, publish_dir: Path) -> None:
        self.publish_dir = publish_dir

    def path_for(self, name: str) -> Path:
        return self.publish_dir / f"{name}.json"

    def current(self, name: str) -> PromptDocument | None:
        """The document the file holds now; None when it is missing, unreadable or invalid (the
        start-up republish then rewrites it)."""
        try:
            return PromptDocument.model_validate_json(self.path_for(name).read_bytes())
        except (OSError, ValidationError):
            return None

    def holds(self, document: PromptDocument, activation_id: int) -> bool:
        """The file holds this version now. A rollback to v5, then v7, then v5 again writes v5
        again: what counts is the current file, not whether v5 was ever written."""
        current = self.current(document.name)
        return current is not None and (current.version, current.sha256) == (
            document.version,
            document.sha256,
        )

    def publish(self, document: PromptDocument, activation_id: int) -> None:
        path = self.path_for(document.name)
        try:
            write_atomically(path, document_json(document).encode("utf-8"))
        except OSError as exc:
            raise PublishError(f"cannot write {path}: {one_line(exc)}") from exc

    def close(self) -> None:
        """Nothing stays open between deliveries."""


def write_atomically(path: Path, content: bytes) -> None:
    """Temp file in the same directory, fsync, rename over `path`, fsync the directory (so the
    rename itself survives a power cut)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def key_partition(key: bytes, partitions: int) -> int:
    """Which of `partitions` (in id order) kafka-python's and Java's default partitioner sends
    `key` to."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class KafkaPublisher:
    """Records on the prompts topic: key = prompt name, value = the document, header
    `gepa-activation` = the activation id. The producer is idempotent with acks=all, and is
    rebuilt after any failure: an idempotent producer whose broker lost its state (a restarted
    memory-only broker) fails with UnknownProducerIdError until it is recreated."""

    target = "kafka"

    def __init__(self, settings: Settings, timeout_s: float = KAFKA_TIMEOUT_S) -> None:
        if not settings.kafka_bootstrap_servers:
            raise ConfigError("the kafka publish target needs SIDECAR_KAFKA_BOOTSTRAP_SERVERS")
        self.bootstrap_servers = settings.kafka_bootstrap_servers
        self.security = kafka_security_options(settings)
        self.topic = settings.prompts_topic
        self.timeout_s = timeout_s
        self._producer: KafkaProducer | None = None

    def _client_options(self) -> dict[str, Any]:
        """How to connect securely, and every wait a client may do bounded by this publisher's
        timeout."""
        timeout_ms = int(self.timeout_s * 1000)
        return {
            "bootstrap_timeout_ms": timeout_ms,
            "request_timeout_ms": max(timeout_ms, 1000),
            **self.security,
        }

    def _connected_producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = build_client(
                KafkaProducer,
                bootstrap_servers=self.bootstrap_servers,
                enable_idempotence=True,
                acks="all",
                max_block_ms=int(self.timeout_s * 1000),
                delivery_timeout_ms=int(self.timeout_s * 1000) + 1000,
                linger_ms=0,
                **self._client_options(),
            )
        return self._producer

    def publish(self, document: PromptDocument, activation_id: int) -> None:
        """Send the record and wait until the broker has acknowledged it."""
        try:
            producer = self._connected_producer()
            future = producer.send(
                self.topic,
                key=document.name.encode("utf-8"),
                value=document_json(document).encode("utf-8"),
                headers=record_headers(activation_id),
            )
            producer.flush(timeout=self.timeout_s)
            future.get(timeout=self.timeout_s)
        except KafkaError as exc:
            self._discard_producer()
            raise PublishError(
                f"publishing {document.name} v{document.version} to topic {self.topic} "
                f"failed: {one_line(exc)}"
            ) from exc

    def holds(self, document: PromptDocument, activation_id: int) -> bool:
        """Scan the partition the name's key maps to for a record of this activation.

        The embedded broker never compacts, so the scan reads the whole partition; on a real
        compacted topic only the latest record per key is kept, which is the one that matters
        (the newest activation). Raises PublishError when the topic cannot be read in time: a
        False that is not known would deliver twice."""
        key = document.name.encode("utf-8")
        header = (ACTIVATION_HEADER, str(activation_id).encode("ascii"))
        try:
            consumer = build_client(
                KafkaConsumer,
                bootstrap_servers=self.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                allow_auto_create_topics=False,
                **self._client_options(),
            )
        except KafkaError as exc:
            raise PublishError(f"cannot read topic {self.topic}: {one_line(exc)}") from exc
        try:
            return self._scan(consumer, key, header)
        except KafkaError as exc:
            raise PublishError(f"cannot read topic {self.topic}: {one_line(exc)}") from exc
        finally:
            with contextlib.suppress(KafkaError):
                consumer.close()

    def _scan(self, consumer: KafkaConsumer, key: bytes, header: tuple[str, bytes]) -> bool:
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            return False
        ids = sorted(partitions)
        partition = TopicPartition(self.topic, ids[key_partition(key, len(ids))])
        consumer.assign([partition])
        end = consumer.end_offsets([partition])[partition]
        consumer.seek_to_beginning(partition)
        deadline = time.monotonic() + self.timeout_s
        while consumer.position(partition) < end:
            if time.monotonic() > deadline:
                raise PublishError(
                    f"cannot read topic {self.topic} partition {partition.partition} "
                    f"within {self.timeout_s:g}s"
                )
            for records in consumer.poll(timeout_ms=200).values():
                if any(_is_activation(record, key, header) for record in records):
                    return True
        return False

    def _discard_producer(self) -> None:
        """Drop the producer without waiting: the next publish builds a fresh one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                producer.close(timeout=0)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                producer.close(timeout=self.timeout_s)


def record_headers(activation_id: int) -> list[tuple[str, bytes]]:
    return [
        (ACTIVATION_HEADER, str(activation_id).encode("ascii")),
        ("content-type", CONTENT_TYPE.encode("ascii")),
    ]


def _is_activation(record: Any, key: bytes, header: tuple[str, bytes]) -> bool:
    return bool(record.key == key and header in list(record.headers or []))
