"""Ingest throughput against raw kafka-python consumption of the same records, same run.

Both arms read the same topic with a fresh consumer group and the same group settings; each
is timed from partition assignment to its last record (raw: received; sidecar: validated,
deduplicated, stored in SQLite and counted). Prints one JSON line; the goal is ratio >= 0.9.

    .venv/bin/python bench/ingest.py [--events 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

from sidecar.ingest.consumer import TrafficConsumer
from sidecar.metrics import PREFIX, Metrics
from sidecar.runtime.kafka import ensure_topics, kafka_cluster
from sidecar.settings import load_settings
from sidecar.store.database import create_database_engine, migrate

GROUP_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def produce(servers: str, topic: str, count: int) -> int:
    rng = random.Random(42)
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=20)
    size = 0
    for index in range(count):
        value = json.dumps(
            {
                "schema_version": 1,
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "prompt_name": "customer-care",
                "prompt_version": 3,
                "timestamp": datetime.now(UTC).isoformat(),
                "inputs": {"user_message": f"Where is my order {index}? It was due last week."},
                "output": "Your order left our warehouse yesterday and arrives in two days.",
                "trace": {"model": "m", "latency_ms": 812, "tokens": {"prompt": 120}},
                "metadata": {"segment": rng.choice(["billing", "shipping"]), "locale": "en"},
            }
        ).encode()
        size += len(value)
        producer.send(topic, value=value)
    producer.flush()
    producer.close()
    return size // count


def raw_consume(servers: str, topic: str, count: int) -> float:
    """Seconds from assignment to the last of `count` records with a plain KafkaConsumer."""
    assigned: list[float] = []

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: object) -> None:
            pass

        def on_partitions_assigned(self, partitions: object) -> None:
            assigned.append(time.perf_counter())

    consumer = KafkaConsumer(
        bootstrap_servers=servers,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        **GROUP_SETTINGS,
    )
    consumer.subscribe([topic], listener=Listener())
    seen = 0
    while seen < count:
        seen += sum(len(batch) for batch in consumer.poll(timeout_ms=200).values())
    elapsed = time.perf_counter() - assigned[0]
    consumer.close(autocommit=False)
    return elapsed


def sidecar_ingest(servers: str, topic: str, count: int, workdir: Path) -> float:
    """Seconds from assignment to the last of `count` events stored and counted."""
    database = workdir / f"{uuid.uuid4().hex[:8]}.db"
    settings = load_settings(
        kafka_bootstrap_servers=servers,
        traffic_topic=topic,
        dlq_topic=topic + ".dlq",
        consumer_group=f"sidecar-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{database}",
        kafka_session_timeout_ms=GROUP_SETTINGS["session_timeout_ms"],
        kafka_heartbeat_interval_ms=GROUP_SETTINGS["heartbeat_interval_ms"],
        kafka_auto_offset_reset="earliest",
    )
    engine = create_database_engine(settings.database_url)
    migrate(engine)
    metrics = Metrics(managed=["customer-care"])
    consumer = TrafficConsumer(settings, servers, metrics)
    accepted_labels = {"prompt": "customer-care", "outcome": "accepted"}
    runner = threading.Thread(target=consumer.run, daemon=True)
    runner.start()
    if not consumer.wait_assigned(60):
        raise RuntimeError("sidecar consumer was not assigned partitions")
    start = time.perf_counter()
    while (
        metrics.registry.get_sample_value(PREFIX + "events_consumed_total", accepted_labels) or 0
    ) < count:
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    consumer.stop()
    runner.join()
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with kafka_cluster(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as servers:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(servers, [topic, topic + ".dlq"])
        mean_bytes = produce(servers, topic, args.events)
        raw, sidecar = [], []
        with tempfile.TemporaryDirectory() as workdir:
            for _ in range(args.rounds):
                raw.append(args.events / raw_consume(servers, topic, args.events))
                sidecar.append(
                    args.events / sidecar_ingest(servers, topic, args.events, Path(workdir))
                )
    result = {
        "bench": "ingest",
        "events": args.events,
        "mean_event_bytes": mean_bytes,
        "rounds": args.rounds,
        "raw_consume_events_per_s": round(statistics.median(raw)),
        "sidecar_ingest_events_per_s": round(statistics.median(sidecar)),
        "ratio": round(statistics.median(sidecar) / statistics.median(raw), 3),
        "round_ratios": [round(s / r, 3) for s, r in zip(sidecar, raw, strict=True)],
        "goal": ">= 0.9",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
