"""Per-segment sample rates on a real broker and a shared PostgreSQL: two replicas of one
consumer group, each owning one partition, store exactly the events whose hash falls below
their segment's rate, with exact counts and the rate each was kept at; a redelivery through the
other replica decides every event the same way. The optimizer and the shadow runner read each
stored event's rate back."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer
from sqlalchemy import Engine, select

from sidecar.events import ConsumedEvent, TrafficEvent
from sidecar.ingest.consumer import TrafficConsumer
from sidecar.ingest.sampling import sample_point
from sidecar.metrics import Metrics
from sidecar.store.candidates import judged_window
from sidecar.store.judgments import JudgmentRecord, store_judgments
from sidecar.store.repository import store_events, transaction
from sidecar.store.shadow import fresh_events
from sidecar.store.tables import Event, IngestCount
from tests.conftest import Topics
from tests.helpers import encode, make_event, scaled, sidecar_settings, wait_until
from tests.integration.test_consumer_offsets import lag_partitions, split

CARE = "customer-care"
OTHER = "other-bot"  # not in CONFIG_FILE: SAMPLE_RATE
SAMPLE_RATE = 0.5
SAMPLING = {"rate": 0.3, "segments": {"billing": 1.0, "shipping": 0.1}}


def expected_rate(event: dict[str, Any]) -> float:
    """The rule, written out for the test: the segment's rate, else the prompt's, else
    SAMPLE_RATE."""
    if event["prompt_name"] != CARE:
        return SAMPLE_RATE
    segment = event["metadata"].get("segment")
    return float(SAMPLING["segments"].get(segment, SAMPLING["rate"]))  # type: ignore[attr-defined]


def traffic(seed: int) -> list[dict[str, Any]]:
    """A common segment, a rare one, events with no segment, and a prompt nobody configured."""
    rng = random.Random(seed)
    made = [make_event(rng, metadata={"segment": "shipping"}) for _ in range(300)]
    made += [make_event(rng, metadata={"segment": "billing"}) for _ in range(60)]
    made += [make_event(rng, metadata={"locale": "en"}) for _ in range(100)]
    made += [make_event(rng, prompt_name=OTHER) for _ in range(100)]
    rng.shuffle(made)
    return made


def produce_to(bootstrap: str, topic: str, sent: list[tuple[dict[str, Any], int]]) -> None:
    """Each event to the partition given, keyed by its id."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for event, partition in sent:
        producer.send(
            topic, key=event["event_id"].encode(), value=encode(event), partition=partition
        )
    producer.flush()
    producer.close()


@contextmanager
def replica(settings: Any) -> Iterator[Metrics]:
    metrics = Metrics([CARE])
    consumer = TrafficConsumer(settings, str(settings.kafka_bootstrap_servers), metrics)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield metrics
    finally:
        consumer.stop()
        thread.join(scaled(60))
        assert not thread.is_alive(), "consumer did not stop"


def counts(engine: Engine) -> Counter[tuple[str, str]]:
    with transaction(engine) as connection:
        rows = connection.execute(
            select(IngestCount.prompt_name, IngestCount.outcome, IngestCount.count)
        )
        return Counter({(prompt, outcome): n for prompt, outcome, n in rows})


def stored(engine: Engine) -> dict[str, tuple[float | None, int]]:
    """Event id -> (its stored sample rate, the partition it was read from)."""
    query = select(Event.event_id, Event.sample_rate, Event.source_partition)
    with transaction(engine) as connection:
        return {
            event_id: (rate, partition) for event_id, rate, partition in connection.execute(query)
        }


def counted(metrics: Metrics, outcome: str) -> float:
    """Records this replica counted with `outcome`, over every prompt."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("outcome") == outcome
    )


def test_two_replicas_keep_exactly_what_each_segments_rate_says(
    kafka_bootstrap: str,
    topics: Topics,
    postgres_url: str,
    migrated_engine: Callable[[str], Engine],
    tmp_path: Path,
) -> None:
    engine = migrated_engine(postgres_url)
    config = tmp_path / "prompts.yaml"
    spec = {"name": CARE, "seed": {"system_prompt": "Help."}, "sampling": SAMPLING}
    config.write_text(yaml.safe_dump({"prompts": [spec]}), encoding="utf-8")
    settings = sidecar_settings(
        kafka_bootstrap, topics, postgres_url, sample_rate=SAMPLE_RATE, config_file=config
    )
    events = traffic(seed=20261130)
    kept = {
        e["event_id"]: expected_rate(e)
        for e in events
        if sample_point(e["event_id"]) < expected_rate(e)
    }
    dropped = Counter(e["prompt_name"] for e in events if e["event_id"] not in kept)
    accepted = Counter(e["prompt_name"] for e in events if e["event_id"] in kept)
    billing = [
        e for e in events if e["prompt_name"] == CARE and e["metadata"].get("segment") == "billing"
    ]
    assert all(kept[e["event_id"]] == 1.0 for e in billing)  # the rare segment, kept whole
    assert dropped[CARE] > 0 and dropped[OTHER] > 0

    with replica(settings) as first:
        wait_until(lambda: lag_partitions(first, topics.traffic) == {0, 1}, 60, "both partitions")
        with replica(settings) as second:
            wait_until(lambda: split(first, second, topics.traffic), 120, "one partition each")
            produce_to(kafka_bootstrap, topics.traffic, [(e, i % 2) for i, e in enumerate(events)])
            wait_until(lambda: sum(counts(engine).values()) == len(events), 60, "all counted")
            rows = stored(engine)
            assert {event_id: rate for event_id, (rate, _) in rows.items()} == kept
            assert counts(engine) == {
                **{(name, "accepted"): n for name, n in accepted.items()},
                **{(name, "sampled_out"): n for name, n in dropped.items()},
            }
            assert counted(first, "accepted") > 0 and counted(second, "accepted") > 0
            assert counted(first, "accepted") + counted(second, "accepted") == len(kept)

            # the same events again, each through the other partition, so the other replica
            produce_to(
                kafka_bootstrap, topics.traffic, [(e, (i + 1) % 2) for i, e in enumerate(events)]
            )
            wait_until(lambda: sum(counts(engine).values()) == 2 * len(events), 60, "redelivered")
            assert stored(engine) == rows
            (owned,) = lag_partitions(first, topics.traffic)
            from_the_other = sum(1 for _, partition in rows.values() if partition != owned)
            assert counted(first, "duplicate") == from_the_other
            assert counted(second, "duplicate") == len(kept) - from_the_other
            assert counts(engine) == {
                **{(name, "accepted"): n for name, n in accepted.items()},
                **{(name, "duplicate"): n for name, n in accepted.items()},
                **{(name, "sampled_out"): 2 * n for name, n in dropped.items()},
            }


def test_the_optimizer_and_the_shadow_runner_read_each_events_rate(
    database_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine = migrated_engine(database_url)
    rng = random.Random(3)
    now = datetime.now(UTC)
    rates = [1.0, 0.05, None, 0.25]
    items = [
        ConsumedEvent(TrafficEvent.model_validate_json(encode(make_event(rng))), 0, i, rate)
        for i, rate in enumerate(rates)
    ]
    store_events(engine, items, {}, now)
    fresh = fresh_events(engine, CARE, now - timedelta(hours=1), 10)
    assert [event.sample_rate for event in fresh] == rates
    records = [JudgmentRecord(event.row_id, CARE, 1, "judge-v1", 0.5, "Fine.") for event in fresh]
    store_judgments(engine, records, now)
    window = judged_window(engine, CARE, "judge-v1", 10, now - timedelta(hours=1))
    assert [instance.sample_rate for instance in window] == rates


@pytest.mark.parametrize("rate", [0.05, 1.0])
def test_a_stored_rate_round_trips_exactly(
    rate: float, database_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine = migrated_engine(database_url)
    item = ConsumedEvent(
        TrafficEvent.model_validate_json(encode(make_event(random.Random(4)))), 1, 7, rate
    )
    store_events(engine, [item], {}, datetime.now(UTC))
    assert stored(engine) == {str(item.event.event_id): (rate, 1)}
