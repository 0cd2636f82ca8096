"""Building kafka-python clients from an app's options, leaving nothing open when that fails.

kafka-python builds a client's network layer (two sockets) before it first connects, and when
that connection fails inside the constructor nothing closes it: a HotPrompt or TrafficEmitter
retrying against a down broker would leak two descriptors a try. Built through ClosingClients
(the documented `kafka_client` option), the clients of a failed construction are closed.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kafka.net.compat import KafkaNetClient

from sidecar.errors import ConfigError

RESERVED_OPTIONS = frozenset(
    {"kafka_client", "key_serializer", "value_serializer", "key_deserializer", "value_deserializer"}
)
"""Options the SDK sets itself: an app's value would break what it sends or reads."""


class ClosingClients:
    """A `kafka_client` factory that remembers what it made, to close it after a failure."""

    def __init__(self) -> None:
        self.made: list[KafkaNetClient] = []

    def __call__(self, **configs: Any) -> KafkaNetClient:
        client = KafkaNetClient(**configs)
        self.made.append(client)
        return client

    def close(self) -> None:
        for client in self.made:
            with contextlib.suppress(Exception):
                client.close()


def build_client(kind: Any, **configs: Any) -> Any:
    """A KafkaProducer or KafkaConsumer, leaving nothing open when it cannot be built."""
    clients = ClosingClients()
    try:
        return kind(kafka_client=clients, **configs)
    except BaseException:
        clients.close()
        raise


def checked_options(kind: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The app's Kafka options (security_protocol, sasl_*, ssl_*, client_id, …) when `kind`
    knows every one of them; a ConfigError naming the others, at construction rather than at
    the first (background) connection."""
    unknown = sorted(set(options) - set(kind.DEFAULT_CONFIG))
    reserved = sorted(set(options) & RESERVED_OPTIONS)
    if unknown or reserved:
        raise ConfigError(
            f"{kind.__name__} options not accepted: {', '.join(unknown + reserved)} "
            "(unknown to kafka-python, or set by the SDK)"
        )
    return dict(options)
