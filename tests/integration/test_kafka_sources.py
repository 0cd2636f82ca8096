"""Where the tests' and the demo's Kafka comes from: a configured cluster is used as given;
with no Docker engine the embedded broker starts; with one, testcontainers' Kafka."""

from __future__ import annotations

import socket

import pytest
from kafka import KafkaAdminClient

from sidecar.runtime.kafka import docker_engine_answers, kafka_cluster


def test_configured_servers_are_used_as_given() -> None:
    with kafka_cluster("kafka-0.example:9092,kafka-1.example:9092") as servers:
        assert servers == "kafka-0.example:9092,kafka-1.example:9092"


@pytest.mark.skipif(
    docker_engine_answers(), reason="a Docker engine answers: testcontainers is used"
)
def test_without_docker_the_embedded_broker_answers_and_stops() -> None:
    with kafka_cluster(None) as servers:
        admin = KafkaAdminClient(bootstrap_servers=servers)
        assert isinstance(admin.list_topics(), list)
        admin.close()
    host, port = servers.rsplit(":", 1)
    assert host == "127.0.0.1"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2).close()


@pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers here")
def test_with_docker_testcontainers_kafka_answers() -> None:
    with kafka_cluster(None) as servers:
        admin = KafkaAdminClient(bootstrap_servers=servers)
        assert isinstance(admin.list_topics(), list)
        admin.close()
