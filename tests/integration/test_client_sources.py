"""HotPrompt against the real things: the file FilePublisher writes (watched with inotify), the
sidecar's HTTP API on a real server (ETag and 304), and the prompts topic on a real broker
written by KafkaPublisher. Each source picks up new versions and rollbacks, refuses what is bad
while keeping the last good document, and serves the fallback until something loads."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response

from sidecar.api.app import create_api
from sidecar.api.models import Liveness
from sidecar.client import HotPrompt
from sidecar.events import PromptDocument
from sidecar.promote.publishers import FilePublisher, KafkaPublisher, write_atomically
from sidecar.promote.served import ServedDocuments
from sidecar.runtime.broker import free_port
from sidecar.runtime.http import HttpServer
from sidecar.runtime.kafka import ensure_topics
from sidecar.settings import load_settings
from tests.helpers import produce, wait_until

NAME = "customer-care"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FALLBACK = {"system_prompt": "You are a helpful customer-care agent."}
NEVER_S = 3600.0
"""A poll interval no test waits out: what the test sees came from an event, not a poll."""


def document(version: int, name: str = NAME) -> PromptDocument:
    return PromptDocument.build(
        name=name,
        version=version,
        components={"system_prompt": f"Policy text of version {version}."},
        created_at=NOW,
    )


class Changes:
    """What on_change saw, in order."""

    def __init__(self, prompt: HotPrompt) -> None:
        self.versions: list[int] = []
        prompt.on_change(lambda changed: self.versions.append(changed.version))


def warned(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


@pytest.fixture(autouse=True)
def client_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.client")


# --- file:// -----------------------------------------------------------------------------------


def test_the_file_source_follows_the_publisher_and_its_rollback(tmp_path: Path) -> None:
    publisher = FilePublisher(tmp_path)
    publisher.publish(document(2), 1)
    prompt = HotPrompt(
        NAME, f"file://{publisher.path_for(NAME)}", fallback=FALLBACK, poll_interval_s=NEVER_S
    )
    changes = Changes(prompt)
    with prompt:
        wait_until(lambda: prompt.version == 2, 30, "v2 from the file")
        assert prompt.components == document(2).components
        publisher.publish(document(3), 2)
        wait_until(lambda: prompt.version == 3, 30, "v3 after the publisher's rename")
        publisher.publish(document(2), 3)
        wait_until(lambda: prompt.version == 2, 30, "the rollback to v2")
    assert changes.versions == [2, 3, 2]
    assert prompt.get() == document(2)


def test_a_tampered_or_truncated_file_is_refused_and_the_last_good_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = FilePublisher(tmp_path)
    path = publisher.path_for(NAME)
    publisher.publish(document(2), 1)
    body = json.loads(document(3).model_dump_json())
    body["components"]["system_prompt"] = "Tampered after approval."
    with HotPrompt(NAME, f"file://{path}", poll_interval_s=NEVER_S) as prompt:
        wait_until(lambda: prompt.version == 2, 30, "v2 from the file")
        for _ in range(2):
            write_atomically(path, json.dumps(body).encode())
            wait_until(lambda: warned(caplog, "does not match components"), 30, "the refusal")
        write_atomically(path, document(4).model_dump_json().encode()[:-30])
        wait_until(lambda: warned(caplog, "Invalid JSON"), 30, "the truncated file refused")
        write_atomically(path, document(5, name="billing").model_dump_json().encode())
        wait_until(lambda: warned(caplog, "a document of 'billing'"), 30, "the foreign one")
        assert prompt.get() == document(2)
        publisher.publish(document(6), 2)
        wait_until(lambda: prompt.version == 6, 30, "v6 once a good file is back")
    assert len(warned(caplog, "does not match components")) == 1
    assert "Tampered" not in caplog.text


def test_a_missing_file_serves_the_fallback_until_it_is_published(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = FilePublisher(tmp_path)
    path = publisher.path_for(NAME)
    template = [{"role": "system", "content": "{system_prompt}"}]
    with HotPrompt(
        NAME, f"file://{path}", template=template, fallback=FALLBACK, poll_interval_s=NEVER_S
    ) as prompt:
        wait_until(lambda: warned(caplog, f"cannot read {path}"), 30, "the missing file logged")
        assert (prompt.get(), prompt.version) == (None, None)
        assert prompt.render() == [{"role": "system", "content": FALLBACK["system_prompt"]}]
        publisher.publish(document(2), 1)
        wait_until(lambda: prompt.version == 2, 30, "v2 once published")
        assert prompt.render()[0]["content"] == "Policy text of version 2."


def test_without_a_directory_to_watch_the_file_is_polled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = FilePublisher(tmp_path / "not-yet")
    path = publisher.path_for(NAME)
    with HotPrompt(NAME, f"file://{path}", fallback=FALLBACK, poll_interval_s=0.05) as prompt:
        wait_until(lambda: warned(caplog, "cannot watch"), 30, "the watch failure logged")
        assert prompt.components == FALLBACK
        publisher.publish(document(2), 1)
        wait_until(lambda: prompt.version == 2, 30, "v2 by polling")
        publisher.publish(document(3), 2)
        wait_until(lambda: prompt.version == 3, 30, "v3 by polling")


def test_a_failing_on_change_never_reaches_the_app(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = FilePublisher(tmp_path)
    publisher.publish(document(2), 1)
    prompt = HotPrompt(NAME, f"file://{publisher.path_for(NAME)}", poll_interval_s=NEVER_S)

    @prompt.on_change
    def broken(changed: PromptDocument) -> None:
        raise RuntimeError(f"the app failed on v{changed.version}")

    changes = Changes(prompt)
    with prompt:
        wait_until(lambda: changes.versions == [2], 30, "v2 announced")
        publisher.publish(document(3), 2)
        wait_until(lambda: changes.versions == [2, 3], 30, "v3 announced after a failure")
    failures = [r for r in caplog.records if "on_change callback failed" in r.getMessage()]
    assert [r.exc_info[1].args for r in failures if r.exc_info and r.exc_info[1]] == [
        ("the app failed on v2",),
        ("the app failed on v3",),
    ]


# --- http:// -----------------------------------------------------------------------------------


class Ready:
    def readiness(self) -> dict[str, bool]:
        return {"prompt": True}

    def liveness(self) -> Liveness:
        return Liveness(checks={"worker": True})


class Sidecar:
    """The API of a sidecar replica on a real server, counting the answers to /active."""

    def __init__(self, served: ServedDocuments, port: int = 0) -> None:
        self.statuses: list[int] = []
        api = create_api(Ready(), CollectorRegistry(), served=served)

        @api.middleware("http")
        async def count(request: Request, call_next: object) -> Response:
            response: Response = await call_next(request)  # type: ignore[operator]
            if request.url.path.endswith("/active"):
                self.statuses.append(response.status_code)
            return response

        self.server = HttpServer(api, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{self.server.port}"


@contextmanager
def sidecar(served: ServedDocuments, port: int = 0) -> Iterator[Sidecar]:
    running = Sidecar(served, port)
    try:
        yield running
    finally:
        running.server.stop()


def test_the_http_source_polls_with_the_etag_and_304s_change_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = ServedDocuments()
    with sidecar(served) as replica:
        prompt = HotPrompt(NAME, replica.url, fallback=FALLBACK, poll_interval_s=0.05)
        changes = Changes(prompt)
        with prompt:
            wait_until(lambda: warned(caplog, "serves nothing for this prompt"), 30, "a 404")
            assert prompt.components == FALLBACK
            served.publish(document(2), 1)
            wait_until(lambda: prompt.version == 2, 30, "v2 over HTTP")
            answered = len(replica.statuses)
            wait_until(lambda: replica.statuses[answered:].count(304) >= 3, 30, "three 304s")
            assert changes.versions == [2]
            served.publish(document(3), 2)
            wait_until(lambda: prompt.version == 3, 30, "v3 over HTTP")
            served.publish(document(1), 3)
            wait_until(lambda: prompt.version == 1, 30, "the rollback to v1 over HTTP")
    assert changes.versions == [2, 3, 1]
    assert set(replica.statuses) == {404, 200, 304}


def test_the_http_source_keeps_the_last_good_while_the_sidecar_is_down_or_wrong(
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = ServedDocuments()
    served.publish(document(2), 1)
    port = free_port()
    with sidecar(served, port) as replica:
        prompt = HotPrompt(NAME, replica.url, poll_interval_s=0.05)
        prompt.start()
        wait_until(lambda: prompt.version == 2, 30, "v2 over HTTP")
    try:
        wait_until(lambda: warned(caplog, "cannot reach"), 30, "the outage logged")
        assert prompt.get() == document(2)
        forged = document(3).model_copy(update={"sha256": "0" * 64})
        served.publish(forged, 2)
        with sidecar(served, port):
            wait_until(lambda: warned(caplog, "does not match components"), 60, "the forgery")
            assert prompt.get() == document(2)
            served.publish(document(4), 3)
            wait_until(lambda: prompt.version == 4, 60, "v4 once the sidecar is back")
            prompt.close()
    finally:
        prompt.close()
    assert len(warned(caplog, "cannot reach")) == 1


# --- kafka:// ----------------------------------------------------------------------------------


@pytest.fixture
def prompts_topic(kafka_bootstrap: str) -> str:
    topic = f"prompts-{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_bootstrap, [topic], partitions=2, compacted=[topic])
    return topic


@contextmanager
def kafka_publisher(bootstrap: str, topic: str) -> Iterator[KafkaPublisher]:
    publisher = KafkaPublisher(
        load_settings(kafka_bootstrap_servers=bootstrap, prompts_topic=topic), timeout_s=30
    )
    try:
        yield publisher
    finally:
        publisher.close()


def test_the_kafka_source_starts_from_the_latest_record_and_follows(
    kafka_bootstrap: str, prompts_topic: str
) -> None:
    with kafka_publisher(kafka_bootstrap, prompts_topic) as publisher:
        for activation, version in enumerate((2, 3, 1), start=1):
            publisher.publish(document(version), activation)
        publisher.publish(document(9, name="billing"), 4)
        prompt = HotPrompt(
            NAME,
            f"kafka://{kafka_bootstrap}/{prompts_topic}",
            fallback=FALLBACK,
            poll_interval_s=0.2,
        )
        changes = Changes(prompt)
        with prompt:
            wait_until(lambda: prompt.version == 1, 60, "v1, the latest record, at start")
            publisher.publish(document(4), 5)
            wait_until(lambda: prompt.version == 4, 60, "v4 as it is published")
            publisher.publish(document(3), 6)
            wait_until(lambda: prompt.version == 3, 60, "the rollback to v3")
    assert changes.versions == [1, 4, 3]


def test_the_kafka_source_refuses_a_bad_record_and_keeps_the_last_good(
    kafka_bootstrap: str, prompts_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = NAME.encode()
    good = document(2).model_dump_json().encode()
    produce(kafka_bootstrap, prompts_topic, [good, b'{"name": "customer-care", "vers'], [key, key])
    with HotPrompt(
        NAME, f"kafka://{kafka_bootstrap}/{prompts_topic}", poll_interval_s=0.2
    ) as prompt:
        wait_until(lambda: prompt.version == 2, 60, "v2, the latest good record")
        assert warned(caplog, f"{prompts_topic}[")
        produce(kafka_bootstrap, prompts_topic, [b"garbage"], [key])
        wait_until(lambda: len(warned(caplog, "refused")) == 2, 60, "the new bad record")
        assert prompt.get() == document(2)


def test_the_kafka_source_waits_for_a_broker_and_a_topic(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    down = HotPrompt(NAME, f"kafka://{dead}/gepa.prompts", fallback=FALLBACK, poll_interval_s=0.1)
    started = threading.Event()
    starter = threading.Thread(target=lambda: (down.start(), started.set()), daemon=True)
    starter.start()
    assert started.wait(10), "start() waited for the broker"
    try:
        wait_until(lambda: warned(caplog, f"cannot reach kafka {dead}"), 60, "the outage logged")
        assert down.components == FALLBACK
    finally:
        down.close()
    topic = f"prompts-{uuid.uuid4().hex[:10]}"
    with HotPrompt(NAME, f"kafka://{kafka_bootstrap}/{topic}", poll_interval_s=0.1) as prompt:
        wait_until(lambda: warned(caplog, f"topic {topic} does not exist"), 60, "missing topic")
        ensure_topics(kafka_bootstrap, [topic])
        with kafka_publisher(kafka_bootstrap, topic) as publisher:
            publisher.publish(document(2), 1)
        wait_until(lambda: prompt.version == 2, 60, "v2 once the topic exists")
