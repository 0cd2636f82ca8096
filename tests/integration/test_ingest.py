"""Ingest end to end on a real broker and a real database: exact counts, dead letters with
reasons, dedupe across redeliveries, deterministic sampling, and a clean stop that commits."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaAdminClient
from sqlalchemy import Engine

from sidecar.events import MAX_EVENT_BYTES
from sidecar.ingest.consumer import TrafficConsumer
from sidecar.ingest.dead_letter import REASON_HEADER, SOURCE_HEADER, TRUNCATED_HEADER
from sidecar.ingest.sampling import is_sampled
from sidecar.metrics import Metrics
from sidecar.settings import Settings
from sidecar.store.repository import count_stored_events, ingest_totals, stored_event_ids
from tests.conftest import Topics
from tests.helpers import (
    encode,
    make_event,
    produce,
    read_all,
    scaled,
    sidecar_settings,
    wait_until,
)

RNG_SEED = 20261125


def malformed_corpus() -> list[tuple[bytes, str]]:
    """One or more records of every kind of bad input, with the reason each must get."""
    rng = random.Random(1)
    good = make_event(rng)

    def without(field: str) -> bytes:
        return encode({k: v for k, v in good.items() if k != field})

    def with_value(field: str, value: Any) -> bytes:
        return encode({**good, field: value})

    return [
        (b"", "empty"),
        (b"not json at all", "not_json"),
        (b'{"schema_version": 1,', "not_json"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b"[1, 2, 3]", "not_object"),
        (with_value("schema_version", 2), "unsupported_schema_version"),
        (without("event_id"), "missing_field"),
        (without("inputs"), "missing_field"),
        (without("output"), "missing_field"),
        (without("timestamp"), "missing_field"),
        (with_value("prompt_version", "3"), "wrong_type"),
        (with_value("inputs", {"user_message": 42}), "wrong_type"),
        (with_value("event_id", "not-a-uuid"), "wrong_type"),
        (with_value("timestamp", "2026-11-25T12:00:00"), "wrong_type"),
        (with_value("output", "x" * (MAX_EVENT_BYTES + 10)), "too_large"),
    ]


@pytest.fixture
def engine(database_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    return migrated_engine(database_url)


class Running:
    """A TrafficConsumer on a thread, stopped and joined at the end of the test."""

    def __init__(self, settings: Settings) -> None:
        self.metrics = Metrics(["customer-care"])
        self.consumer = TrafficConsumer(
            settings, str(settings.kafka_bootstrap_servers), self.metrics
        )
        self.thread = threading.Thread(target=self.consumer.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.consumer.stop()
        self.thread.join(timeout=scaled(60))
        assert not self.thread.is_alive(), "consumer did not stop"

    def counted(self, outcome: str) -> float:
        total = 0.0
        for metric in self.metrics.registry.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("outcome") == outcome:
                    total += sample.value
        return total


def test_exact_counts_dead_letters_and_duplicates(
    kafka_bootstrap: str, topics: Topics, database_url: str, engine: Any
) -> None:
    rng = random.Random(RNG_SEED)
    events = [make_event(rng) for _ in range(1000)]
    redelivered = events[:50]
    corpus = malformed_corpus()
    values = [encode(e) for e in events] + [v for v, _ in corpus] + [encode(e) for e in redelivered]
    keys = [e["event_id"].encode() for e in events] + [None] * len(corpus)
    keys += [e["event_id"].encode() for e in redelivered]
    produce(kafka_bootstrap, topics.traffic, values, keys)

    settings = sidecar_settings(kafka_bootstrap, topics, database_url, ingest_batch_size=100)
    with Running(settings) as running:
        wait_until(lambda: sum(ingest_totals(engine).values()) >= len(values), what="all counted")

        assert ingest_totals(engine) == {
            "accepted": 1000,
            "sampled_out": 0,
            "invalid": len(corpus),
            "duplicate": 50,
        }
        assert count_stored_events(engine) == 1000
        stored = stored_event_ids(engine)
        assert sorted(stored) == sorted(e["event_id"] for e in events)
        assert running.counted("accepted") == 1000
        assert running.counted("invalid") == len(corpus)
        assert running.counted("duplicate") == 50

    letters = read_all(kafka_bootstrap, topics.dlq, expected=len(corpus))
    assert len(letters) == len(corpus)
    reasons = Counter(dict(r.headers)[REASON_HEADER].decode() for r in letters)
    assert reasons == Counter(reason for _, reason in corpus)
    for letter in letters:
        headers = dict(letter.headers)
        topic, partition, offset = headers[SOURCE_HEADER].decode().rsplit("/", 2)
        assert topic == topics.traffic and int(partition) in (0, 1) and int(offset) >= 0
        if headers[REASON_HEADER] == b"too_large":
            assert int(headers[TRUNCATED_HEADER]) > MAX_EVENT_BYTES
        else:
            assert letter.value in {v for v, _ in corpus} | {None}


def test_sampling_keeps_the_same_events_every_time(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine = migrated_engine(sqlite_url)
    rng = random.Random(RNG_SEED + 1)
    events = [make_event(rng) for _ in range(400)]
    produce(kafka_bootstrap, topics.traffic, [encode(e) for e in events])
    expected = {e["event_id"] for e in events if is_sampled(e["event_id"], 0.3)}

    settings = sidecar_settings(kafka_bootstrap, topics, sqlite_url, sample_rate=0.3)
    with Running(settings):
        wait_until(lambda: sum(ingest_totals(engine).values()) >= 400, what="all counted")
    totals = ingest_totals(engine)
    assert set(stored_event_ids(engine)) == expected
    assert totals["accepted"] == len(expected)
    assert totals["sampled_out"] == 400 - len(expected)


def test_stop_commits_offsets_and_a_restart_resumes_after_them(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine = migrated_engine(sqlite_url)
    rng = random.Random(RNG_SEED + 2)
    first = [make_event(rng) for _ in range(150)]
    produce(kafka_bootstrap, topics.traffic, [encode(e) for e in first])
    settings = sidecar_settings(kafka_bootstrap, topics, sqlite_url, ingest_batch_size=20)
    with Running(settings):
        wait_until(lambda: count_stored_events(engine) == 150, what="first 150 stored")

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    committed = admin.list_group_offsets(topics.group)[topics.group]
    admin.close()
    assert sum(meta.offset for meta in committed.values()) == 150

    second = [make_event(rng) for _ in range(30)]
    produce(kafka_bootstrap, topics.traffic, [encode(e) for e in second])
    with Running(settings):
        wait_until(lambda: count_stored_events(engine) == 180, what="next 30 stored")
    assert ingest_totals(engine)["duplicate"] == 0, "a restart re-read committed records"


def test_events_keep_inputs_and_metadata(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    from sqlmodel import Session, select

    from sidecar.store.tables import Event

    engine = migrated_engine(sqlite_url)
    event = make_event(random.Random(3), metadata={"segment": "billing", "locale": "de"})
    event["trace"] = {"model": "m", "latency_ms": 812, "tokens": {"prompt": 1, "completion": 2}}
    event["unknown_field"] = "ignored"
    produce(kafka_bootstrap, topics.traffic, [json.dumps(event).encode()])
    with Running(sidecar_settings(kafka_bootstrap, topics, sqlite_url)):
        wait_until(lambda: count_stored_events(engine) == 1, what="the event stored")
    with Session(engine) as session:
        row = session.exec(select(Event)).one()
    assert row.event_id == event["event_id"]
    assert row.inputs == event["inputs"] and row.output == event["output"]
    assert row.meta == {"segment": "billing", "locale": "de"} and row.segment == "billing"
    assert row.trace == event["trace"]
    assert row.source_partition in (0, 1)
