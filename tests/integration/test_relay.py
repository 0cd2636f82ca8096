"""The outbox relay against a real broker, real files and a real database: each activation
reaches each target exactly once, also when the process died between committing an approval
and delivering it, or between delivering and marking it delivered."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from sidecar.events import PromptDocument
from sidecar.metrics import PREFIX, Metrics
from sidecar.promote.publishers import FilePublisher, KafkaPublisher, Publisher
from sidecar.promote.relay import OutboxRelay
from sidecar.promote.served import ServedDocuments
from sidecar.runtime.kafka import ensure_topics
from sidecar.settings import Settings, load_settings
from sidecar.store.outbox import begin_attempt, pending_outbox
from sidecar.store.promotions import reject, rollback
from sidecar.store.repository import seed_prompt, status_summary
from tests.helpers import activations, metric_value, scaled, wait_until
from tests.versions import NAME, TARGETS, add_version, approved

World = tuple[Engine, Settings, Path]
PASSED = {"shadow_mean": 0.9, "champion_mean": 0.5, "n": 40, "p_value": 0.001}
"""The shadow gate's figures for a version whose published evidence a test reads back."""


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def world(
    database_url: str,
    migrated_engine: Callable[[str], Engine],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> Iterator[World]:
    engine = migrated_engine(database_url)
    seed_prompt(engine, NAME, {"system_prompt": "You are a helpful assistant."}, now())
    topic = f"prompts-{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_bootstrap, [topic], compacted=[topic])
    settings = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap, prompts_topic=topic, publish_dir=tmp_path
    )
    yield engine, settings, tmp_path


class Relays:
    """Relays made by a test (each over real publishers), all stopped at its end."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.made: list[OutboxRelay] = []

    def make(self, kafka: Publisher | None = None) -> tuple[OutboxRelay, ServedDocuments, Metrics]:
        served = ServedDocuments()
        publishers: dict[str, Publisher] = {
            "file": FilePublisher(self.settings.publish_dir),
            "kafka": kafka or KafkaPublisher(self.settings),
            "http": served,
        }
        metrics = Metrics([NAME], publishers)
        relay = OutboxRelay(self.engine, publishers, metrics, poll_interval_s=0.05)
        self.made.append(relay)
        return relay, served, metrics


@pytest.fixture
def relays(world: World) -> Iterator[Relays]:
    made = Relays(world[0], world[1])
    yield made
    for relay in made.made:
        relay.stop()


def on_file(settings: Settings) -> PromptDocument | None:
    return FilePublisher(settings.publish_dir).current(NAME)


def test_the_seed_is_published_to_the_file_and_served_but_never_sent_to_kafka(
    world, relays: Relays
) -> None:
    _engine, settings, _ = world
    relay, served, metrics = relays.make()
    relay.tick()
    assert on_file(settings).version == 1
    assert served.get(NAME).version == 1
    assert activations(settings.kafka_bootstrap_servers, settings.prompts_topic) == []
    assert metric_value(metrics, "active_prompt_version", prompt=NAME) == 1
    assert metric_value(metrics, "candidates", prompt=NAME, status="active") == 1


def test_an_approval_reaches_every_target_exactly_once(world: World, relays: Relays) -> None:
    engine, settings, _ = world
    version = add_version(engine, "awaiting_approval", shadow=PASSED)
    relay, served, metrics = relays.make()
    relay.tick()
    activation = approved(engine, version)
    assert status_summary(engine)["prompts"][NAME]["pending_publishes"] == 3
    relay.tick()
    relay.tick()
    assert status_summary(engine)["prompts"][NAME] == {
        "active_version": version,
        "published": {"file": version, "kafka": version, "http": version},
        "pending_publishes": 0,
    }
    document = on_file(settings)
    assert (document.version, document.approved_by) == (version, "alice")
    assert document.evidence.shadow_mean == 0.9
    assert served.get(NAME) == document
    assert activations(settings.kafka_bootstrap_servers, settings.prompts_topic) == [
        (version, activation.id)
    ]
    assert pending_outbox(engine) == []
    assert metric_value(metrics, "publishes_total", target="kafka", outcome="ok") == 1
    assert metric_value(metrics, "approvals_total", prompt=NAME, decision="approved") == 1
    assert metric_value(metrics, "active_prompt_version", prompt=NAME) == version
    assert metric_value(metrics, "candidates", prompt=NAME, status="retired") == 1


def test_a_process_killed_after_committing_an_approval_delivers_it_on_restart(
    world, relays: Relays
) -> None:
    engine, settings, _ = world
    version = add_version(engine, "awaiting_approval")
    activation = approved(engine, version, note="ship it")
    # No relay ran: the process died after the commit. The next one delivers on its first tick.
    relay, served, _ = relays.make()
    relay.tick()
    assert on_file(settings).version == version
    assert served.get(NAME).version == version
    assert activations(settings.kafka_bootstrap_servers, settings.prompts_topic) == [
        (version, activation.id)
    ]


def test_a_process_killed_after_delivering_but_before_marking_it_does_not_deliver_twice(
    world, relays: Relays
) -> None:
    engine, settings, _ = world
    version = add_version(engine, "awaiting_approval")
    activation = approved(engine, version)
    item = next(i for i in pending_outbox(engine) if i.target == "kafka")
    # What the dead process did: begin the attempt, deliver, and die before marking it.
    begin_attempt(engine, item.id, now())
    dead = KafkaPublisher(settings)
    dead.publish(PromptDocument.model_validate(item.document), item.activation_id)
    dead.close()
    relay, _, metrics = relays.make()
    relay.tick()
    assert activations(settings.kafka_bootstrap_servers, settings.prompts_topic) == [
        (version, activation.id)
    ]
    assert (
        metric_value(metrics, "publishes_total", target="kafka", outcome="already_delivered") == 1
    )
    assert pending_outbox(engine) == []


def test_a_rollback_republishes_the_earlier_version_to_every_target(
    world: World, relays: Relays
) -> None:
    engine, settings, _ = world
    version = add_version(engine, "awaiting_approval")
    relay, served, metrics = relays.make()
    relay.tick()
    first = approved(engine, version)
    relay.tick()
    back = rollback(
        engine, NAME, to=None, by="bob", reason="complaints", targets=TARGETS, now=now()
    )
    relay.tick()
    assert back.version == 1
    assert on_file(settings).version == 1
    assert served.get(NAME).version == 1
    assert activations(settings.kafka_bootstrap_servers, settings.prompts_topic) == [
        (version, first.id),
        (1, back.id),
    ]
    assert metric_value(metrics, "rollbacks_total", prompt=NAME) == 1
    assert metric_value(metrics, "active_prompt_version", prompt=NAME) == 1


def test_an_activation_superseded_before_delivery_still_reaches_the_topic_in_order(
    world, relays: Relays
) -> None:
    engine, settings, _ = world
    version = add_version(engine, "awaiting_approval")
    first = approved(engine, version)
    back = rollback(engine, NAME, to=1, by="bob", reason="too soon", targets=TARGETS, now=now())
    relay, served, metrics = relays.make()
    relay.tick()
    assert on_file(settings).version == 1
    assert served.get(NAME).version == 1
    assert activations(settings.kafka_bootstrap_servers, settings.prompts_topic) == [
        (version, first.id),
        (1, back.id),
    ]
    assert metric_value(metrics, "publishes_total", target="file", outcome="ok") == 1
    assert pending_outbox(engine) == []


def test_kafka_down_keeps_its_rows_pending_while_the_file_and_http_move_on(
    world, relays: Relays
) -> None:
    engine, settings, _ = world
    version = add_version(engine, "awaiting_approval")
    down = load_settings(kafka_bootstrap_servers="127.0.0.1:1", prompts_topic="nowhere")
    relay, served, metrics = relays.make(kafka=KafkaPublisher(down, timeout_s=2))
    activation = approved(engine, version)
    relay.tick()
    assert on_file(settings).version == version
    assert served.get(NAME).version == version
    [left] = pending_outbox(engine)
    assert left.target == "kafka"
    assert metric_value(metrics, "publishes_total", target="kafka", outcome="failed") == 1
    healthy, _, _ = relays.make()
    healthy.tick()
    assert activations(settings.kafka_bootstrap_servers, settings.prompts_topic) == [
        (version, activation.id)
    ]


class StalledTarget:
    """A topic whose broker takes a delivery and does not answer until the test lets it go."""

    target = "kafka"

    def __init__(self) -> None:
        self.delivering = threading.Event()
        self.answer = threading.Event()

    def publish(self, document: PromptDocument, activation_id: int) -> None:
        self.delivering.set()
        self.answer.wait()

    def holds(self, document: PromptDocument, activation_id: int) -> bool:
        return False

    def close(self) -> None:
        self.answer.set()


def test_the_file_is_in_place_before_a_stalled_delivery_to_another_target(
    world: World, relays: Relays
) -> None:
    engine, settings, _ = world
    version = add_version(engine, "awaiting_approval")
    stalled = StalledTarget()
    relay, served, _ = relays.make(kafka=stalled)
    approved(engine, version)
    ticking = threading.Thread(target=relay.tick, daemon=True)
    ticking.start()
    try:
        assert stalled.delivering.wait(scaled(10))
        assert relay.prompts_in_place
        assert on_file(settings).version == version
        assert served.get(NAME).version == version
    finally:
        stalled.answer.set()
        ticking.join(scaled(10))


def test_a_relay_is_alive_from_its_first_delivery_on_until_it_is_stopped(
    world: World, relays: Relays
) -> None:
    """start() delivers once on the caller's thread before its own starts: /healthz must not
    call that relay dead (a pod whose sidecar restarted for it would never settle)."""
    engine, _, _ = world
    approved(engine, add_version(engine, "awaiting_approval"))
    stalled = StalledTarget()
    relay, _, _ = relays.make(kafka=stalled)
    starting = threading.Thread(target=relay.start, daemon=True)
    starting.start()
    try:
        assert stalled.delivering.wait(scaled(10))
        assert relay.alive
    finally:
        stalled.answer.set()
        starting.join(scaled(10))
    assert relay.alive
    relay.stop()
    assert not relay.alive


def test_a_missing_or_garbled_file_is_republished_on_start(world: World, relays: Relays) -> None:
    _engine, settings, publish_dir = world
    relays.make()[0].tick()
    path = publish_dir / f"{NAME}.json"
    path.write_text("{not json")
    relays.make()[0].tick()
    assert on_file(settings).version == 1
    path.unlink()
    relays.make()[0].tick()
    assert on_file(settings).version == 1


def test_decisions_by_any_client_become_counters_and_gauges(world: World, relays: Relays) -> None:
    engine, _settings, _ = world
    better = add_version(engine, "awaiting_approval")
    worse = add_version(engine, "awaiting_approval")
    relay, _, metrics = relays.make()
    relay.tick()
    reject(engine, NAME, worse, by="carol", reason="vague", now=now())
    approved(engine, better)
    relay.tick()
    assert metric_value(metrics, "approvals_total", prompt=NAME, decision="approved") == 1
    assert metric_value(metrics, "approvals_total", prompt=NAME, decision="rejected") == 1
    assert metric_value(metrics, "candidates", prompt=NAME, status="awaiting_approval") == 0
    assert metric_value(metrics, "candidates", prompt=NAME, status="rejected") == 1


def test_the_longest_wait_for_approval_is_a_gauge_gone_once_none_waits(
    world: World, relays: Relays
) -> None:
    engine, _settings, _ = world
    since = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    older = add_version(engine, "awaiting_approval", now=since)
    newer = add_version(engine, "awaiting_approval", now=since + timedelta(hours=5))
    add_version(engine, "shadow", now=since - timedelta(days=1))  # not waiting for a person
    relay, _, metrics = relays.make()

    def waiting_since() -> float | None:
        name = PREFIX + "awaiting_approval_since_timestamp_seconds"
        return metrics.registry.get_sample_value(name, {"prompt": NAME})

    relay.tick()
    assert waiting_since() == since.timestamp()
    reject(engine, NAME, older, by="carol", reason="vague", now=now())
    relay.tick()
    assert waiting_since() == (since + timedelta(hours=5)).timestamp()
    approved(engine, newer)
    relay.tick()
    assert waiting_since() is None


def test_the_running_relay_delivers_as_soon_as_it_is_woken(world: World, relays: Relays) -> None:
    engine, settings, _ = world
    version = add_version(engine, "awaiting_approval")
    relay, served, _ = relays.make()
    relay.poll_interval_s = 3600  # only a wake can make it deliver within the test
    relay.start()
    try:
        approved(engine, version)
        relay.wake()
        wait_until(lambda: served.get(NAME).version == version, 30, "the woken relay")
    finally:
        relay.stop()
    assert on_file(settings).version == version
