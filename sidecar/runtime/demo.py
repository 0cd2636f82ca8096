"""`gepa-sidecar demo`: the whole sidecar on embedded defaults, driven by the example chatbot's
traffic, so a newcomer sees events flow, get validated, deduplicated and counted."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from kafka import KafkaProducer

from sidecar.errors import ConfigError, SidecarError
from sidecar.runtime.app import App
from sidecar.runtime.kafka import ensure_topics, kafka_cluster
from sidecar.settings import load_settings
from sidecar.store.repository import count_stored_events, ingest_totals

EXAMPLE_DIR = Path("examples/customer_care")
WAIT_S = 90.0
MALFORMED = [
    b"this is not JSON",
    b'{"schema_version": 1, "prompt_name": "customer-care"}',
    b"\xff\xfe not utf-8",
]


def load_example(directory: Path) -> ModuleType:
    path = directory / "traffic.py"
    if not path.is_file():
        raise ConfigError(f"demo needs {path}: run it from the repository root")
    spec = importlib.util.spec_from_file_location("example_traffic", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_demo(events: int, data_dir: Path, echo: Callable[[str], None]) -> None:
    example = load_example(EXAMPLE_DIR)
    data_dir.mkdir(parents=True, exist_ok=True)
    base = load_settings()
    with kafka_cluster(base.kafka_bootstrap_servers) as servers:
        settings = load_settings(
            kafka_bootstrap_servers=servers,
            database_url=os.environ.get(
                "SIDECAR_DATABASE_URL", f"sqlite:///{data_dir / 'sidecar.db'}"
            ),
            config_file=base.config_file or EXAMPLE_DIR / "config.yaml",
            kafka_session_timeout_ms=6000,
            kafka_heartbeat_interval_ms=1000,
        )
        ensure_topics(servers, [settings.traffic_topic, settings.dlq_topic])
        echo(f"broker      {servers}")
        app = App(settings)
        runner = threading.Thread(target=app.run, name="sidecar", daemon=True)
        runner.start()
        try:
            _wait(lambda: app.consumer is not None and app.consumer.assigned, "the consumer")
            port = app.http.port if app.http else settings.http_port
            echo(f"sidecar     http://127.0.0.1:{port}/metrics  (database {settings.database_url})")
            before = sum(ingest_totals(app.engine).values())
            sent = _stream(servers, settings.traffic_topic, example, events)
            echo(
                f"streamed    {events} example events, 1 redelivered duplicate, "
                f"{len(MALFORMED)} malformed records"
            )
            _wait(lambda: sum(ingest_totals(app.engine).values()) - before >= sent, "the counts")
            totals = ingest_totals(app.engine)
            echo("counted     " + "  ".join(f"{k}={v}" for k, v in sorted(totals.items())))
            echo(f"stored      {count_stored_events(app.engine)} events in the database")
            echo("dead letters went to topic " + settings.dlq_topic + " with a reason header")
        finally:
            app.stop()
            runner.join(timeout=30)


def _stream(servers: str, topic: str, example: ModuleType, count: int) -> int:
    rng = random.Random()
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    first = None
    for _ in range(count):
        event = example.example_event(rng)
        first = first or event
        producer.send(topic, key=event["event_id"].encode(), value=json.dumps(event).encode())
    if first is not None:
        producer.send(topic, key=first["event_id"].encode(), value=json.dumps(first).encode())
    for value in MALFORMED:
        producer.send(topic, value=value)
    producer.flush()
    producer.close()
    return count + (1 if first else 0) + len(MALFORMED)


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise SidecarError(f"demo: timed out waiting for {what}")
        time.sleep(0.1)
