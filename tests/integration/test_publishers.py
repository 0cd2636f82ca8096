"""The file and Kafka publish targets against real files and a real broker: what they write, what
`holds` answers (the relay's guard against delivering twice), and their one-line failures."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from sidecar.errors import ConfigError, PublishError
from sidecar.events import PromptDocument
from sidecar.promote.documents import document_json
from sidecar.promote.publishers import FilePublisher, KafkaPublisher, key_partition
from sidecar.runtime.broker import EmbeddedBroker, free_port
from sidecar.runtime.kafka import ensure_topics
from sidecar.settings import load_settings
from tests.helpers import read_all, scaled


def document(version: int, name: str = "customer-care", text: str = "") -> PromptDocument:
    return PromptDocument.build(
        name=name,
        version=version,
        components={"system": text or f"Version {version}: answer from the order record."},
        created_at=datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
    )


def assert_one_line(error: BaseException) -> None:
    assert str(error)
    assert "\n" not in str(error)


# -- file target ---------------------------------------------------------------------------


def test_file_publish_creates_the_directory_and_writes_the_document(tmp_path: Path) -> None:
    publisher = FilePublisher(tmp_path / "shared" / "prompts")
    published = document(3)

    publisher.publish(published, 11)

    path = tmp_path / "shared" / "prompts" / "customer-care.json"
    assert path.read_text(encoding="utf-8") == document_json(published)
    assert publisher.current("customer-care") == published
    assert publisher.holds(published, 11)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in path.parent.iterdir()) == ["customer-care.json"]


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    """The serving app reads whenever it likes: every read is absent or a whole document."""
    publisher = FilePublisher(tmp_path)
    path = publisher.path_for("customer-care")
    versions = range(1, 151)
    documents = {v: document(v, text=f"Version {v}. " + "Policy line. " * 5000) for v in versions}
    publisher.publish(documents[1], 1)
    stop = threading.Event()
    seen: list[int] = []
    partial: list[str] = []

    def read_continuously() -> None:
        while not stop.is_set():
            raw = path.read_bytes()
            try:
                seen.append(PromptDocument.model_validate_json(raw).version)
            except ValueError as exc:
                partial.append(f"{len(raw)} bytes: {exc}")

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for version in versions[1:]:
            publisher.publish(documents[version], version)
    finally:
        stop.set()
        reader.join()

    assert partial == []
    assert seen
    assert set(seen) <= set(versions)
    assert publisher.current("customer-care") == documents[150]


def test_holds_compares_with_the_current_file_after_a_rollback(tmp_path: Path) -> None:
    """v5, then v7, then a rollback to v5: v5 was written once, but the file holds v7."""
    publisher = FilePublisher(tmp_path)
    publisher.publish(document(5), 1)
    publisher.publish(document(7), 2)

    assert not publisher.holds(document(5), 3)
    assert publisher.holds(document(7), 2)
    publisher.publish(document(5), 3)
    assert publisher.holds(document(5), 3)


def test_missing_garbage_and_tampered_files_hold_nothing(tmp_path: Path) -> None:
    publisher = FilePublisher(tmp_path)
    wanted = document(2)
    path = publisher.path_for("customer-care")

    assert publisher.current("customer-care") is None
    assert not publisher.holds(wanted, 1)

    path.write_bytes(b'{"name": "customer-care", "vers')
    assert publisher.current("customer-care") is None
    assert not publisher.holds(wanted, 1)

    tampered = document_json(wanted).replace("Version 2", "Version 9")
    path.write_text(tampered, encoding="utf-8")
    assert publisher.current("customer-care") is None
    assert not publisher.holds(wanted, 1)

    publisher.publish(wanted, 1)
    assert publisher.holds(wanted, 1)


def test_a_stale_file_is_not_the_active_version(tmp_path: Path) -> None:
    publisher = FilePublisher(tmp_path)
    publisher.publish(document(4), 1)
    assert publisher.current("customer-care") == document(4)
    assert not publisher.holds(document(6), 2)
    assert not publisher.holds(document(4, name="other-bot"), 1)


def test_a_directory_that_is_a_file_gives_one_line_publish_error(tmp_path: Path) -> None:
    blocker = tmp_path / "prompts"
    blocker.write_text("not a directory")
    publisher = FilePublisher(blocker)

    with pytest.raises(PublishError, match="cannot write") as caught:
        publisher.publish(document(1), 1)

    assert_one_line(caught.value)
    assert str(blocker) in str(caught.value)
    assert publisher.current("customer-care") is None


def test_a_failed_rename_leaves_no_temp_file(tmp_path: Path) -> None:
    publisher = FilePublisher(tmp_path)
    occupied = publisher.path_for("customer-care")
    occupied.mkdir()
    (occupied / "keep").write_text("a directory where the file should go")

    with pytest.raises(PublishError) as caught:
        publisher.publish(document(1), 1)

    assert_one_line(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customer-care.json"]
    assert publisher.current("customer-care") is None
    assert not publisher.holds(document(1), 1)


def made_immutable(directory: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    return made.returncode == 0


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """A directory nobody can create files in: mode 0555, and for root (which ignores modes)
    the immutable attribute, where the filesystem and capabilities allow it."""
    directory.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and not made_immutable(directory):
        directory.chmod(0o755)
        pytest.skip("root ignores modes, and chattr +i is not available here")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)


def test_a_read_only_directory_gives_one_line_publish_error(tmp_path: Path) -> None:
    """The failed delivery leaves the previous document whole, and no temp file behind."""
    directory = tmp_path / "prompts"
    publisher = FilePublisher(directory)
    publisher.publish(document(1), 1)
    with read_only(directory), pytest.raises(PublishError, match="cannot write") as caught:
        publisher.publish(document(2), 2)
    assert_one_line(caught.value)
    assert str(directory) in str(caught.value)
    assert [p.name for p in directory.iterdir()] == ["customer-care.json"]
    assert publisher.current("customer-care") == document(1)


# -- Kafka target --------------------------------------------------------------------------


def prompts_topic(bootstrap: str, partitions: int = 3) -> str:
    topic = f"prompts-{uuid.uuid4().hex[:10]}"
    ensure_topics(bootstrap, [topic], partitions=partitions, compacted=[topic])
    return topic


def kafka_publisher(bootstrap: str, topic: str, timeout_s: float = 30.0) -> KafkaPublisher:
    settings = load_settings(kafka_bootstrap_servers=bootstrap, prompts_topic=topic)
    return KafkaPublisher(settings, timeout_s=timeout_s)


def test_kafka_record_has_the_name_key_the_document_and_the_activation(
    kafka_bootstrap: str,
) -> None:
    topic = prompts_topic(kafka_bootstrap)
    publisher = kafka_publisher(kafka_bootstrap, topic)
    published = document(7)
    try:
        publisher.publish(published, 42)
    finally:
        publisher.close()

    [record] = read_all(kafka_bootstrap, topic, expected=1)
    assert record.key == b"customer-care"
    assert record.partition == key_partition(b"customer-care", 3)
    assert PromptDocument.model_validate_json(record.value) == published
    assert record.value == document_json(published).encode("utf-8")
    assert dict(record.headers) == {
        "gepa-activation": b"42",
        "content-type": b"application/json",
    }


def test_kafka_holds_only_the_activation_it_was_given(kafka_bootstrap: str) -> None:
    topic = prompts_topic(kafka_bootstrap)
    publisher = kafka_publisher(kafka_bootstrap, topic)
    try:
        assert not publisher.holds(document(7), 42)
        for index, name in enumerate(["billing-bot", "returns-bot", "sales-bot"]):
            publisher.publish(document(1, name=name), 100 + index)
        publisher.publish(document(6), 41)
        assert not publisher.holds(document(7), 42)

        publisher.publish(document(7), 42)

        assert publisher.holds(document(7), 42)
        assert publisher.holds(document(6), 41)
        assert not publisher.holds(document(7), 43)
        assert not publisher.holds(document(7, name="billing-bot"), 42)
    finally:
        publisher.close()


def test_kafka_holds_on_a_missing_topic_is_false_and_creates_nothing(
    kafka_bootstrap: str,
) -> None:
    topic = f"prompts-missing-{uuid.uuid4().hex[:10]}"
    publisher = kafka_publisher(kafka_bootstrap, topic)

    assert not publisher.holds(document(1), 1)

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert topic not in admin.list_topics()
    finally:
        admin.close()


def test_the_producer_is_idempotent_with_acks_all(kafka_bootstrap: str) -> None:
    publisher = kafka_publisher(kafka_bootstrap, prompts_topic(kafka_bootstrap))
    try:
        publisher.publish(document(1), 1)
        producer = publisher._producer
        assert producer is not None
        assert producer.config["enable_idempotence"] is True
        assert producer.config["acks"] == -1
    finally:
        publisher.close()


def test_an_unreachable_broker_gives_one_line_errors() -> None:
    publisher = kafka_publisher(f"127.0.0.1:{free_port()}", "gepa.prompts", timeout_s=scaled(1))

    expected = re.escape("customer-care v1 to topic gepa.prompts")
    with pytest.raises(PublishError, match=expected) as caught:
        publisher.publish(document(1), 1)
    assert_one_line(caught.value)
    with pytest.raises(PublishError, match=re.escape("cannot read topic gepa.prompts")) as asked:
        publisher.holds(document(1), 1)
    assert_one_line(asked.value)
    publisher.close()


def test_the_publisher_recovers_after_its_broker_restarts() -> None:
    """A memory-only broker restart loses every record and the idempotent producer's id: the
    failed publish is reported, and the next one (after the broker is back) goes through."""
    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    try:
        servers = broker.bootstrap_servers
        ensure_topics(servers, ["gepa.prompts"], partitions=1)
        publisher = kafka_publisher(servers, "gepa.prompts", timeout_s=scaled(2))
        publisher.publish(document(1), 1)
        assert publisher.holds(document(1), 1)

        broker.stop()
        with pytest.raises(PublishError) as caught:
            publisher.publish(document(2), 2)
        assert_one_line(caught.value)

        broker = EmbeddedBroker(port=port).start()
        ensure_topics(servers, ["gepa.prompts"], partitions=1)
        assert not publisher.holds(document(1), 1)
        publisher.publish(document(2), 2)

        [record] = read_all(servers, "gepa.prompts", expected=1)
        assert dict(record.headers)["gepa-activation"] == b"2"
        assert publisher.holds(document(2), 2)
        publisher.close()
    finally:
        broker.stop()


def test_the_kafka_target_needs_a_bootstrap_setting() -> None:
    settings = load_settings(kafka_bootstrap_servers=None)
    with pytest.raises(ConfigError, match="SIDECAR_KAFKA_BOOTSTRAP_SERVERS"):
        KafkaPublisher(settings)
