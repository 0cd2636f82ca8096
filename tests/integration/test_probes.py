"""Readiness and liveness of a whole App, as the kubelet sees them over HTTP. The sidecar's
readiness gates the chatbot's pod, so it turns 200 once the published prompt is in place and
stays 200 through a database, broker or model outage; /healthz fails only when a worker died,
which a restart of the sidecar's container mends."""

from __future__ import annotations

import logging
import random
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from sidecar.runtime.app import App
from sidecar.runtime.broker import EmbeddedBroker, free_port
from sidecar.runtime.kafka import ensure_topics
from sidecar.settings import JudgeBlock, PromptsConfig, Settings
from sidecar.store.repository import status_summary, store_events
from tests.conftest import POSTGRES_URL, Topics
from tests.helpers import consumed, scaled, sidecar_settings, wait_until
from tests.world import SPEC

CONFIG = PromptsConfig(prompts=[SPEC])
PUBLISHED = f"{SPEC.name}.json"


def walks_out(inputs: dict[str, str], output: str) -> tuple[float, str]:
    """A code metric that ends the thread it runs on, as a careless `sys.exit` would."""
    sys.exit("the metric called sys.exit")


def probe_settings(bootstrap: str, topics: Topics, database_url: str, **overrides: Any) -> Settings:
    """A sidecar whose models listen nowhere (no test here needs an answer from them)."""
    values: dict[str, Any] = {
        "shutdown_grace_s": 5.0,
        "judge_model": "openai/local",
        "judge_api_base": f"http://127.0.0.1:{free_port()}/v1",
        "llm_max_retries": 0,
        "llm_backoff_base_s": 0.01,
        "llm_timeout_s": 2.0,
        "judge_poll_interval_s": 0.05,
        "judge_retry_after_s": 3600.0,
        **overrides,
    }
    return sidecar_settings(bootstrap, topics, database_url, **values)


@contextmanager
def running(app: App) -> Iterator[httpx.Client]:
    """The App on a thread of its own and a client of its HTTP server; stopped on the way out,
    within its grace."""
    thread = threading.Thread(target=app.run, name="app-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: app.http is not None or not thread.is_alive(), 30, "the HTTP server")
        assert app.http is not None, "the App did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{app.http.port}", timeout=scaled(10)) as c:
            yield c
    finally:
        app.stop()
        thread.join(scaled(30))
    assert not thread.is_alive(), "the App did not stop"


def ready(client: httpx.Client) -> bool:
    return client.get("/readyz").status_code == 200


def health(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/healthz")
    body: dict[str, Any] = response.json()
    assert response.status_code == (200 if body["status"] == "ok" else 503)
    return body


def assert_ready_and_alive(client: httpx.Client) -> dict[str, Any]:
    assert client.get("/readyz").json() == {
        "status": "ready",
        "checks": {"prompts_published": True},
    }
    body = health(client)
    assert body["status"] == "ok"
    assert body["checks"] == {"consumer": True, "judge": True, "relay": True, "scheduler": True}
    return body


Act = Callable[[], None]


@contextmanager
def postgres_database(created: bool) -> Iterator[tuple[str, Act, Act]]:
    """A PostgreSQL database of a test's own (made now, or left for the test to make): its URL,
    a way to create it and a way to drop it under a running sidecar."""
    name = f"probe_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")

    def run(statement: str) -> None:
        with admin.connect() as connection:
            connection.execute(text(statement))

    def create() -> None:
        run(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    if created:
        create()
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(False), create, drop
    finally:
        drop()
        admin.dispose()


@pytest.fixture
def scratch_database() -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL database of its own, and a way to drop it under a running sidecar."""
    with postgres_database(created=True) as (url, _, drop):
        yield url, drop


@pytest.fixture
def absent_database() -> Iterator[tuple[str, Callable[[], None]]]:
    """The URL of a PostgreSQL database that is not there yet, and a way to create it."""
    with postgres_database(created=False) as (url, create, _):
        yield url, create


def waiting_for(client: httpx.Client) -> str | None:
    found: str | None = health(client)["detail"]["starting"]["waiting_for"]
    return found


def test_ready_once_the_prompt_is_published_and_still_with_the_database_gone(
    kafka_bootstrap: str, topics: Topics, scratch_database: tuple[str, Callable[[], None]]
) -> None:
    url, drop = scratch_database
    settings = probe_settings(kafka_bootstrap, topics, url)
    app = App(settings, CONFIG)
    assert app.readiness() == {"prompts_published": False}  # nothing published yet
    with running(app) as client:
        wait_until(lambda: ready(client), 30, "/readyz 200")
        assert (settings.publish_dir / PUBLISHED).exists()
        wait_until(lambda: health(client)["detail"]["database"]["reachable"] is True, 30, "a ping")

        drop()
        wait_until(
            lambda: health(client)["detail"]["database"]["reachable"] is False,
            30,
            "/healthz to say the database is unreachable",
        )
        assert_ready_and_alive(client)
        assert (settings.publish_dir / PUBLISHED).exists()  # the chatbot keeps its prompt


def test_ready_and_alive_with_the_broker_gone(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kafka")
    name = f"t-{uuid.uuid4().hex[:8]}"
    topics = Topics(name, f"{name}.dlq", f"g-{name}")
    broker = EmbeddedBroker().start()
    try:
        ensure_topics(broker.bootstrap_servers, [topics.traffic, topics.dlq])
        app = App(probe_settings(broker.bootstrap_servers, topics, sqlite_url), CONFIG)
        with running(app) as client:
            wait_until(lambda: app.consumer is not None and app.consumer.assigned, 60, "partitions")
            wait_until(lambda: ready(client), 30, "/readyz 200")
            member = client.get("/healthz").json()["detail"]["consumer"]
            assert (member["partitions_assigned"], member["unassigned_s"]) == (True, 0.0)
            broker.stop()
            seen = len(caplog.records)
            wait_until(
                lambda: any(r.name.startswith("kafka") for r in caplog.records[seen:]),
                30,
                "the consumer to run into the outage",
            )
            body = assert_ready_and_alive(client)
            assert body["detail"]["consumer"]["running"] is True
    finally:
        broker.stop()


def test_ready_and_alive_with_the_models_unreachable(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str
) -> None:
    app = App(probe_settings(kafka_bootstrap, topics, sqlite_url), CONFIG)
    with running(app) as client:
        wait_until(lambda: ready(client), 30, "/readyz 200")
        store_events(app.engine, consumed(random.Random(3), 4), {}, datetime.now(UTC))
        wait_until(  # the first fails, and judging pauses: the other three wait, kept
            lambda: status_summary(app.engine)["events"]["judge_errors"] == 1,
            30,
            "a judgment failed on the unreachable model",
        )
        assert status_summary(app.engine)["events"]["accepted"] == 4
        body = assert_ready_and_alive(client)
        assert body["detail"]["judge"] == {"running": True, "error": None}


def ended(judge: dict[str, object]) -> bool:
    return judge["error"] is not None and judge["running"] is False


def test_healthz_fails_when_a_worker_died_and_readiness_does_not(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str
) -> None:
    metric = f"{__name__}:walks_out"
    spec = SPEC.model_copy(update={"judge": JudgeBlock(metric=metric)})
    app = App(probe_settings(kafka_bootstrap, topics, sqlite_url), PromptsConfig(prompts=[spec]))
    with running(app) as client:
        wait_until(lambda: ready(client), 30, "/readyz 200")
        assert health(client)["checks"]["judge"] is True
        store_events(app.engine, consumed(random.Random(4), 1), {}, datetime.now(UTC))
        # the worker records its failure, logs it, then its thread ends: wait for the end
        wait_until(lambda: ended(health(client)["detail"]["judge"]), 30, "the judge failed, ended")
        body = health(client)
        assert body["status"] == "failing"
        assert body["checks"] == {
            "consumer": True,
            "judge": False,
            "relay": True,
            "scheduler": True,
        }
        assert "the metric called sys.exit" in body["detail"]["judge"]["error"]
        assert ready(client)  # the chatbot's pod stays in its Service


def test_not_ready_until_the_prompt_file_can_be_written(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, tmp_path: Path
) -> None:
    in_the_way = tmp_path / "prompts-volume"
    in_the_way.write_text("a file where the published directory should be")
    settings = probe_settings(
        kafka_bootstrap, topics, sqlite_url, publish_dir=in_the_way / "prompts"
    )
    app = App(settings, CONFIG)
    with running(app) as client:
        wait_until(lambda: app.relay is not None, 30, "the start-up publish to be tried")
        assert client.get("/readyz").json() == {
            "status": "not ready",
            "checks": {"prompts_published": False},
        }
        assert health(client)["status"] == "ok"  # nothing a restart would mend
        in_the_way.unlink()
        wait_until(lambda: ready(client), 30, "/readyz 200 once the file is written")
        assert (settings.publish_dir / PUBLISHED).exists()


def test_a_database_not_there_at_start_holds_nothing_back_and_is_waited_for(
    kafka_bootstrap: str, topics: Topics, absent_database: tuple[str, Callable[[], None]]
) -> None:
    url, create = absent_database
    settings = probe_settings(kafka_bootstrap, topics, url)
    app = App(settings, CONFIG)
    with running(app) as client:
        wait_until(lambda: waiting_for(client) == "database", 30, "the start-up to wait")
        assert ready(client)  # nothing is known to publish: the chatbot starts on its own prompt
        assert health(client)["status"] == "ok"
        assert "does not exist" in health(client)["detail"]["starting"]["problem"]
        assert not (settings.publish_dir / PUBLISHED).exists()
        create()
        wait_until(
            lambda: (settings.publish_dir / PUBLISHED).exists(), 60, "the seed, once it is there"
        )
        wait_until(lambda: app.consumer is not None, 60, "the consumer to start")
        assert waiting_for(client) is None
        assert_ready_and_alive(client)


def test_a_broker_not_there_at_start_holds_nothing_back_and_is_waited_for(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="kafka")
    name = f"t-{uuid.uuid4().hex[:8]}"
    topics = Topics(name, f"{name}.dlq", f"g-{name}")
    broker = EmbeddedBroker(port=free_port())
    settings = probe_settings(broker.bootstrap_servers, topics, sqlite_url)
    app = App(settings, CONFIG)
    try:
        with running(app) as client:
            wait_until(lambda: ready(client), 30, "/readyz 200 with no broker")
            assert (settings.publish_dir / PUBLISHED).exists()
            wait_until(lambda: waiting_for(client) == "Kafka", 30, "the start-up to wait")
            assert health(client)["status"] == "ok"
            broker.start()
            wait_until(
                lambda: app.consumer is not None and app.consumer.assigned,
                90,
                "partitions, once the broker is there",
            )
            assert waiting_for(client) is None
            assert_ready_and_alive(client)
    finally:
        broker.stop()


def test_a_stop_while_the_start_up_waits_ends_within_the_grace(sqlite_url: str) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    nowhere = f"127.0.0.1:{free_port()}"
    app = App(probe_settings(nowhere, Topics(name, f"{name}.dlq", f"g-{name}"), sqlite_url), CONFIG)
    with running(app) as client:
        wait_until(lambda: waiting_for(client) == "Kafka", 30, "the start-up to wait")
    assert app.abandoned == []
    assert app.consumer is None and app.judge is None and app.scheduler is None
