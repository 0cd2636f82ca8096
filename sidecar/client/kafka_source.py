"""The prompts topic (key = prompt name, value = the document), reduced to this name's latest
record, then followed.

No consumer group: every partition is assigned by hand and read from the beginning, so each
replica of the app reads the whole history by itself and nothing is committed. At start the
history up to the end offsets is reduced to its latest valid record for this name (one install,
one on_change); after that each new record is installed as it comes. The topic's order is the
truth: a rollback is a newer record holding an older version, and it wins.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from sidecar.client.kafka_clients import build_client, checked_options
from sidecar.client.problems import one_line
from sidecar.client.receiver import Receiver
from sidecar.client.retry import retry_delay
from sidecar.client.security import with_env_security
from sidecar.events import PromptDocument

CONNECT_TIMEOUT_MS = 5_000
"""How long one connection attempt may take before the source backs off and tries again."""


class TopicMissing(Exception):
    """The topic does not exist (yet): the sidecar creates it when it first publishes."""


class KafkaSource:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        name: str,
        poll_interval_s: float,
        options: dict[str, Any],
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.key = name.encode("utf-8")
        self.poll_interval_s = poll_interval_s
        self.description = f"kafka {bootstrap_servers}/{topic}"
        self.options = checked_options(KafkaConsumer, with_env_security(options))

    def run(self, receiver: Receiver, stopping: threading.Event) -> None:
        failures = 0
        while not stopping.is_set():
            try:
                consumer = build_client(KafkaConsumer, **self._configs())
            except Exception as exc:  # kafka-python raises ValueError too, for a bad option
                receiver.problem(f"cannot reach {self.description}: {one_line(exc)}")
            else:
                try:
                    self._follow(consumer, receiver, stopping)
                except TopicMissing:
                    receiver.problem(f"topic {self.topic} does not exist (yet)")
                except (KafkaError, OSError) as exc:
                    receiver.problem(f"lost {self.description}: {one_line(exc)}")
                finally:
                    with contextlib.suppress(Exception):
                        consumer.close()
            failures += 1
            stopping.wait(retry_delay(self.poll_interval_s, failures))

    def _configs(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "group_id": None,
            "enable_auto_commit": False,
            "allow_auto_create_topics": False,
            "auto_offset_reset": "earliest",
            "bootstrap_timeout_ms": CONNECT_TIMEOUT_MS,
            **self.options,
        }

    def _follow(self, consumer: Any, receiver: Receiver, stopping: threading.Event) -> None:
        """Catch up to the end offsets, install the latest, then install each new record."""
        ids = consumer.partitions_for_topic(self.topic)
        if not ids:
            raise TopicMissing(self.topic)
        partitions = [TopicPartition(self.topic, partition) for partition in sorted(ids)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        latest: PromptDocument | None = None
        while any(consumer.position(p) < ends[p] for p in partitions):
            if stopping.is_set():
                return
            latest = self._newest(consumer, receiver, latest)
        if latest is not None:
            receiver.install(latest)
        receiver.healthy()
        while not stopping.is_set():
            document = self._newest(consumer, receiver, None)
            if document is not None:
                receiver.install(document)

    def _newest(
        self, consumer: Any, receiver: Receiver, latest: PromptDocument | None
    ) -> PromptDocument | None:
        """The last valid document of this name in one poll's records, else `latest`."""
        timeout_ms = int(min(self.poll_interval_s, 0.5) * 1000)
        for records in consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                if record.key != self.key:
                    continue
                origin = f"{self.topic}[{record.partition}]@{record.offset}"
                if record.value is None:
                    receiver.problem(f"{origin}: refused: a record with no value")
                    continue
                latest = receiver.check(record.value, origin) or latest
        return latest
