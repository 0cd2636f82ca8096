"""`gepa-sidecar demo`: the whole sidecar on embedded defaults, driven by the example chatbot's
traffic, so a newcomer sees events flow, get validated, deduplicated, counted and judged.

With no model settings the judge is a real small model served locally (see local_model.py), so
the demo runs offline; set SIDECAR_JUDGE_MODEL (and _API_BASE/_API_KEY) to use a provider."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType

from kafka import KafkaProducer

from sidecar.errors import ConfigError, SidecarError
from sidecar.runtime.app import App
from sidecar.runtime.kafka import ensure_topics, kafka_cluster
from sidecar.settings import Settings, load_settings
from sidecar.store.judgments import judgment_feed
from sidecar.store.repository import count_stored_events, ingest_totals

EXAMPLE_DIR = Path("examples/customer_care")
WAIT_S = 90.0
JUDGE_WAIT_S = 600.0
LOCAL_MODEL = "openai/local"
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
    with ExitStack() as stack:
        servers = stack.enter_context(kafka_cluster(base.kafka_bootstrap_servers))
        models = _model_settings(base, stack, echo)
        settings = load_settings(
            **models,
            kafka_bootstrap_servers=servers,
            database_url=os.environ.get(
                "SIDECAR_DATABASE_URL", f"sqlite:///{data_dir / 'sidecar.db'}"
            ),
            config_file=base.config_file or EXAMPLE_DIR / "config.yaml",
            kafka_session_timeout_ms=6000,
            kafka_heartbeat_interval_ms=1000,
            judge_poll_interval_s=0.2,
            publish_dir=os.environ.get("SIDECAR_PUBLISH_DIR", data_dir / "prompts"),
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
            for name in app.served.names():
                document = app.served.get(name)
                version = document.version if document else "?"
                echo(f"published   {name} v{version} at {settings.publish_dir / (name + '.json')}")
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
            _show_judgments(app, settings, events, echo)
        finally:
            app.stop()
            runner.join(timeout=30)


def _model_settings(
    base: Settings, stack: ExitStack, echo: Callable[[str], None]
) -> dict[str, str]:
    """Serve the embedded local model for every role still on the default `openai/local`."""
    local_roles = [
        role
        for role in ("judge", "task", "reflection")
        if getattr(base, f"{role}_model") == LOCAL_MODEL and not getattr(base, f"{role}_api_base")
    ]
    if not local_roles:
        return {}
    from sidecar.runtime.local_model import LocalModelServer

    server = stack.enter_context(LocalModelServer(base.local_model_path))
    echo(
        f"model       {LOCAL_MODEL} = {server.model_path.name} on llama.cpp at {server.api_base}"
        f" ({', '.join(local_roles)}); a 135M model judges only roughly: point "
        "SIDECAR_JUDGE_MODEL at a real one"
    )
    return {f"{role}_api_base": server.api_base for role in local_roles}


def _show_judgments(app: App, settings: Settings, events: int, echo: Callable[[str], None]) -> None:
    """Print each score and its feedback as the judge writes it, until every event has one."""
    echo(f"judging     with {settings.judge_model} (judge workers inside the sidecar)")
    printed = {(row.id, row.attempts) for row, _ in judgment_feed(app.engine)}
    already = sum(row.status == "ok" for row, _ in judgment_feed(app.engine))
    deadline = time.monotonic() + JUDGE_WAIT_S
    while True:
        feed = judgment_feed(app.engine)
        for row, output in feed:
            if (row.id, row.attempts) in printed:
                continue
            printed.add((row.id, row.attempts))
            reply = _clip(output, 48)
            if row.status == "ok":
                echo(f"  score {row.score:.2f}  {reply:<50} judge: {_clip(row.feedback or '', 70)}")
            else:
                echo(f"  judge_error  {reply:<50} (retried later) {_clip(row.error or '', 60)}")
        scores = [row.score for row, _ in feed if row.status == "ok" and row.score is not None]
        if len(scores) >= already + events:
            break
        if time.monotonic() > deadline:
            raise SidecarError("demo: timed out waiting for the judge")
        time.sleep(0.2)
    echo(
        f"judged      {len(scores)} events, mean score {sum(scores) / len(scores):.2f}, "
        f"{len(feed) - len(scores)} judge errors  (`gepa-sidecar status`; judge_score in /metrics)"
    )


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


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
