"""Where the Kafka cluster comes from, and making sure the sidecar's topics exist.

Order: the bootstrap setting (a real cluster) → testcontainers' Kafka where a Docker engine
answers → the embedded broker. `gepa-sidecar run` only ever uses the setting.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from sidecar.client.kafka_clients import build_client
from sidecar.errors import BrokerError
from sidecar.runtime.broker import EmbeddedBroker

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_MS = 10_000


def docker_engine_answers() -> bool:
    """True when `docker info` succeeds, i.e. an engine (not only the client) is there."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@contextmanager
def kafka_cluster(bootstrap_servers: str | None) -> Iterator[str]:
    """Yield bootstrap servers of a working cluster, starting one when none is configured."""
    if bootstrap_servers:
        yield bootstrap_servers
        return
    if docker_engine_answers():
        with _testcontainers_kafka() as servers:
            yield servers
        return
    with EmbeddedBroker() as broker:
        log.info("embedded broker on %s (memory only)", broker.bootstrap_servers)
        yield broker.bootstrap_servers


@contextmanager
def _testcontainers_kafka() -> Iterator[str]:
    try:
        from testcontainers.kafka import KafkaContainer
    except ImportError as exc:
        raise BrokerError("a Docker engine answers but testcontainers is not installed") from exc
    with KafkaContainer() as container:
        yield container.get_bootstrap_server()


def ensure_topics(
    bootstrap_servers: str,
    topics: Sequence[str],
    partitions: int = 1,
    compacted: Sequence[str] = (),
    security: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the topics that are missing (auto-creation picks its own partition count);
    returns the ones created. A cluster that forbids creation is left to its operators.
    `security`: the options of `kafka_security_options(settings)` (none: plaintext)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = build_client(
            KafkaAdminClient,
            bootstrap_servers=bootstrap_servers,
            request_timeout_ms=ADMIN_TIMEOUT_MS,
            bootstrap_timeout_ms=ADMIN_TIMEOUT_MS,
            **(security or {}),
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
    try:
        missing = [name for name in topics if name not in set(admin.list_topics())]
        new = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=-1,
                topic_configs={"cleanup.policy": "compact"} if name in compacted else {},
            )
            for name in missing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                log.warning("could not create topics %s: %s", missing, exc)
                return []
        return missing
    finally:
        admin.close()
