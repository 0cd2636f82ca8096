"""The security settings reach every Kafka client, shown against the real (plaintext) broker: told
to speak TLS, each client fails with an error that names the protocol, within its bounded
timeouts, where a dropped option would have connected and a missing bound would hang. The SDK's
clients take the same settings from the environment."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from sidecar.client import HotPrompt, TrafficEmitter
from sidecar.client.security import kafka_security_options
from sidecar.errors import BrokerError, ConfigError, PublishError
from sidecar.events import PromptDocument
from sidecar.ingest.consumer import TrafficConsumer
from sidecar.ingest.dead_letter import DeadLetterQueue
from sidecar.metrics import Metrics
from sidecar.promote.publishers import KafkaPublisher
from sidecar.runtime.kafka import ensure_topics
from tests.conftest import Topics
from tests.helpers import records, scaled, sidecar_settings, wait_until
from tests.processes import Start, sidecar_env

NAME = "customer-care"
TLS = {"security_protocol": "SSL"}
DOCUMENT = PromptDocument.build(
    name=NAME,
    version=1,
    components={"system_prompt": "Help."},
    created_at=datetime(2026, 11, 28, tzinfo=UTC),
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SIDECAR_"):
            monkeypatch.delenv(name)


def raised_within(action: Callable[[], object], seconds: float) -> BaseException:
    """What `action` raised, run on a thread; the test fails if it returns normally or is
    still running after the (scaled) deadline, i.e. hangs."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(scaled(seconds))
    assert not thread.is_alive(), f"still waiting after {scaled(seconds):g}s"
    assert raised, "it connected: the security option did not reach the client"
    return raised[0]


def warned(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(r.levelno >= logging.WARNING and text in r.getMessage() for r in caplog.records)


def test_the_admin_client_of_ensure_topics_gets_the_options(kafka_bootstrap: str) -> None:
    topic = f"secure-{os.urandom(4).hex()}"
    error = raised_within(lambda: ensure_topics(kafka_bootstrap, [topic], security=TLS), 30)
    assert isinstance(error, BrokerError)
    assert "SSL handshake" in str(error) and kafka_bootstrap in str(error)
    plaintext = {"security_protocol": "PLAINTEXT"}
    assert ensure_topics(kafka_bootstrap, [topic], security=plaintext) == [topic]


def test_the_dead_letter_producer_gets_the_options(kafka_bootstrap: str, topics: Topics) -> None:
    error = raised_within(lambda: DeadLetterQueue(kafka_bootstrap, topics.dlq, TLS), 60)
    assert isinstance(error, BrokerError)
    assert "SSL handshake" in str(error)
    DeadLetterQueue(kafka_bootstrap, topics.dlq, {"security_protocol": "PLAINTEXT"}).close()


def test_the_prompt_publisher_gets_the_settings(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str
) -> None:
    topic = f"{topics.traffic}.prompts"
    ensure_topics(kafka_bootstrap, [topic], compacted=[topic])
    settings = sidecar_settings(kafka_bootstrap, topics, sqlite_url, kafka_security_protocol="SSL")
    assert kafka_security_options(settings) == TLS
    publisher = KafkaPublisher(settings, timeout_s=3)
    try:
        error = raised_within(lambda: publisher.publish(DOCUMENT, 1), 30)
        assert isinstance(error, PublishError)
        assert "SSL handshake" in str(error)
        error = raised_within(lambda: publisher.holds(DOCUMENT, 1), 30)
        assert isinstance(error, PublishError)
    finally:
        publisher.close()
    assert records(kafka_bootstrap, topic) == []


def test_the_traffic_consumer_gets_the_settings(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str
) -> None:
    """kafka-python's own bootstrap timeout (30 s) plus the stall margin: the slow one."""
    settings = sidecar_settings(kafka_bootstrap, topics, sqlite_url, kafka_security_protocol="SSL")
    error = raised_within(lambda: TrafficConsumer(settings, kafka_bootstrap, Metrics([])), 60)
    assert isinstance(error, BrokerError)
    assert "(SSL)" in str(error) and "SSL handshake" in str(error)


def test_a_run_told_to_speak_tls_waits_for_kafka_naming_the_handshake(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, start_sidecar: Start
) -> None:
    """Its first Kafka client, the admin client that makes sure of the topics, gets it: the
    prompts topic is never made."""
    env = sidecar_env(kafka_bootstrap, topics, sqlite_url)
    env["SIDECAR_KAFKA_SECURITY_PROTOCOL"] = "SSL"
    sidecar = start_sidecar(env)

    def waiting() -> bool:
        return any(
            "waiting for" in line and "SSL handshake" in line
            for line in sidecar.log.read_text().splitlines()
        )

    wait_until(waiting, 60, "the start-up waiting on the TLS handshake")
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=scaled(60)) == 0
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert f"{topics.traffic}.prompts" not in admin.list_topics()  # a plaintext one makes it
    finally:
        admin.close()


def test_the_emitter_takes_the_settings_from_the_environment(
    kafka_bootstrap: str,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SIDECAR_KAFKA_SECURITY_PROTOCOL", "SSL")
    emitter = TrafficEmitter(kafka_bootstrap, topics.traffic, prompt_name=NAME)
    try:
        assert emitter.emit({"user_message": "Where is it?"}, "Tomorrow.", 1)
        wait_until(lambda: warned(caplog, "SSL handshake"), 30, "the producer's TLS failure")
    finally:
        emitter.close(0.5)
    assert emitter.sent == 0
    assert records(kafka_bootstrap, topics.traffic) == []


def test_the_hot_prompt_takes_the_settings_from_the_environment(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SIDECAR_KAFKA_SECURITY_PROTOCOL", "SSL")
    source = f"kafka://{kafka_bootstrap}/gepa.prompts"
    with HotPrompt(NAME, source, fallback={"system_prompt": "Help."}, poll_interval_s=0.1):
        wait_until(lambda: warned(caplog, "SSL handshake"), 30, "the source's TLS failure")


def test_an_app_that_passes_its_own_security_options_is_not_overruled(
    kafka_bootstrap: str, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_KAFKA_SECURITY_PROTOCOL", "SSL")
    emitter = TrafficEmitter(
        kafka_bootstrap, topics.traffic, prompt_name=NAME, security_protocol="PLAINTEXT"
    )
    try:
        assert emitter.emit({"user_message": "Where is it?"}, "Tomorrow.", 1)
        wait_until(lambda: emitter.sent == 1, 30, "the event sent over plaintext")
    finally:
        emitter.close(5.0)


@pytest.mark.parametrize("build", ["emitter", "hot_prompt"])
def test_a_bad_environment_stops_the_sdk_at_construction(
    build: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIDECAR_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SIDECAR_KAFKA_SASL_MECHANISM", "PLAIN")
    with pytest.raises(ConfigError, match=r"^SIDECAR_KAFKA_SASL_USERNAME: needed with "):
        if build == "emitter":
            TrafficEmitter("127.0.0.1:9", prompt_name=NAME)
        else:
            HotPrompt(NAME, "kafka://127.0.0.1:9/gepa.prompts")
    HotPrompt(NAME, f"file://{tmp_path / 'p.json'}")  # only a Kafka source reads them
