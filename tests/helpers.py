"""Small test helpers: waiting on a condition with a deadline, producing and reading records."""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from sidecar.events import ConsumedEvent, TrafficEvent
from sidecar.metrics import PREFIX, Metrics
from sidecar.settings import Settings, load_settings

TIMEOUT_FACTOR = float(os.environ.get("SIDECAR_TEST_TIMEOUT_FACTOR", "3"))
"""Every deadline in the tests is a base (generous on an idle laptop) times this factor. They
guard against hangs; none asserts speed. Raise it on a slow or busy machine."""


def scaled(seconds: float) -> float:
    """A test deadline: `seconds` times TIMEOUT_FACTOR."""
    return seconds * TIMEOUT_FACTOR


def wait_until(
    condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Poll until `condition()` holds; fail the test with `what` after `scaled(timeout)`
    seconds."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g}s waiting for {what}")
        time.sleep(0.05)


RECENT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
"""The events' default timestamp: recent, so no judge's age limit expires them."""


def make_event(rng: random.Random, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "prompt_name": "customer-care",
        "prompt_version": 1,
        "timestamp": RECENT.isoformat(),
        "inputs": {"user_message": f"Where is order {rng.randint(1, 99999)}?"},
        "output": "It ships tomorrow.",
        "metadata": {"segment": rng.choice(["billing", "shipping"])},
    }
    event.update(overrides)
    return event


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def consumed(
    rng: random.Random, n: int, partition: int = 0, first_offset: int = 0, **overrides: object
) -> list[ConsumedEvent]:
    """Events as the consumer hands them to the store, without a broker in between."""
    return [
        ConsumedEvent(
            TrafficEvent.model_validate_json(encode(make_event(rng, **overrides))),
            partition,
            first_offset + index,
        )
        for index in range(n)
    ]


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    keys: Sequence[bytes | None] | None = None,
) -> int:
    """Send every value (acks=all) and return how many were sent."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    sent = 0
    for index, value in enumerate(values):
        key = keys[index] if keys is not None else None
        producer.send(topic, key=key, value=value)
        sent += 1
    producer.flush()
    producer.close()
    return sent


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Read `expected` records from every partition of `topic`, by manual assignment, for at
    most `scaled(timeout)` seconds."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list[Any] = []
    deadline = time.monotonic() + scaled(timeout)
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    consumer.close()
    return records


def sidecar_settings(bootstrap: str, topics: Any, database_url: str, **overrides: Any) -> Settings:
    """Settings for a sidecar under test: fast group joins, its own topics and group, and a new
    group reading its topic from the beginning (tests produce before the consumer joins)."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "traffic_topic": topics.traffic,
        "dlq_topic": topics.dlq,
        "consumer_group": topics.group,
        "database_url": database_url,
        "kafka_session_timeout_ms": 6000,
        "kafka_heartbeat_interval_ms": 1000,
        "kafka_auto_offset_reset": "earliest",
        "http_port": 0,
        "http_host": "127.0.0.1",
        "prompts_topic": f"{topics.traffic}.prompts",
        "publish_dir": Path(tempfile.mkdtemp(prefix="gepa-published-")),
    }
    values.update(overrides)
    return load_settings(**values)


def metric_value(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample of the sidecar's registry (0 when the series does not exist yet)."""
    return metrics.registry.get_sample_value(PREFIX + name, labels) or 0.0


def records(bootstrap: str, topic: str) -> list[Any]:
    """Every record of the topic up to its end offsets when asked (not a wait for a count)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: list[Any] = []
        deadline = time.monotonic() + scaled(20)
        while any(consumer.position(p) < ends[p] for p in partitions):
            assert time.monotonic() < deadline, "the topic did not read to its end"
            for batch in consumer.poll(timeout_ms=200).values():
                found.extend(batch)
        return found
    finally:
        consumer.close()


def activations(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    """(version, activation id) of each record, in topic order."""
    return [
        (
            json.loads(record.value)["version"],
            int(dict(record.headers)["gepa-activation"]),
        )
        for record in records(bootstrap, topic)
    ]
