"""Building kafka-python clients from an app's options, leaving nothing open when that fails.

kafka-python builds a client's network layer (two sockets) before it first connects, and when
that connection fails inside the constructor nothing closes it: a HotPrompt or TrafficEmitter
retrying against a down broker would leak two descriptors a try. Built through ClosingClients
(the documented `kafka_client` option), the clients of a failed construction are closed.

Construction is also bounded. kafka-python 3 bounds its bootstrap by `bootstrap_timeout_ms`, but
not a TLS handshake or SASL exchange that the broker never answers (a TLS client on a plaintext
listener that keeps the connection open waits forever); past that timeout the clients are
closed, which ends the wait with an error that says so.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from kafka.errors import KafkaTimeoutError
from kafka.net.compat import KafkaNetClient

from sidecar.errors import ConfigError

RESERVED_OPTIONS = frozenset(
    {"kafka_client", "key_serializer", "value_serializer", "key_deserializer", "value_deserializer"}
)
"""Options the SDK sets itself: an app's value would break what it sends or reads."""


STALL_MARGIN_S = 2.0
"""How long past its own bootstrap timeout a construction may take before it is cut short."""


class ClosingClients:
    """A `kafka_client` factory that remembers what it made, to close it after a failure.

    A construction that stalls is ended by `abandon` (from a timer thread): it shuts down the
    connections the client is stuck on, so kafka-python's own bootstrap fails past its deadline
    and the constructor raises in its own thread (closing an IO loop from a second thread
    leaks its sockets). `close` then closes them: kafka-python drops a socket that failed its
    handshake without closing it."""

    def __init__(self) -> None:
        self.made: list[KafkaNetClient] = []
        self.abandoned = False
        self._settled = False
        self._stuck: list[socket.socket] = []
        self._lock = threading.Lock()

    def __call__(self, **configs: Any) -> KafkaNetClient:
        client = KafkaNetClient(**configs)
        self.made.append(client)
        return client

    def close(self) -> None:
        for client in self.made:
            with contextlib.suppress(Exception):
                client.close()
        for sock in self._stuck:
            sock.close()

    def abandon(self) -> None:
        """The construction took too long: unless it has just finished, break the connections
        it waits on."""
        with self._lock:
            if self._settled:
                return
            self.abandoned = True
            self._stuck = [sock for client in self.made for sock in _waited_on(client)]
        for sock in self._stuck:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def settle(self) -> bool:
        """The construction returned or raised; True when it had been abandoned first."""
        with self._lock:
            self._settled = True
            return self.abandoned


def _waited_on(client: KafkaNetClient) -> list[socket.socket]:
    """The connections the client's IO loop has a task waiting on (not its own wake-up
    socket); none if kafka-python's internals have moved."""
    try:
        keys = list(client._net._selector.get_map().values())
    except Exception:
        return []
    return [
        key.fileobj
        for key in keys
        if isinstance(key.fileobj, socket.socket) and any(key.data or ())
    ]


def build_client(kind: Any, **configs: Any) -> Any:
    """A KafkaProducer, KafkaConsumer or KafkaAdminClient, leaving nothing open when it cannot
    be built, within its bootstrap timeout (plus a margin) whatever the broker does."""
    clients = ClosingClients()
    timeout_ms = configs.get("bootstrap_timeout_ms", kind.DEFAULT_CONFIG["bootstrap_timeout_ms"])
    limit_s = timeout_ms / 1000 + STALL_MARGIN_S
    watchdog = threading.Timer(limit_s, clients.abandon)
    watchdog.daemon = True
    watchdog.start()
    try:
        client = kind(kafka_client=clients, **configs)
    except BaseException as exc:
        watchdog.cancel()
        abandoned = clients.settle()
        clients.close()
        if abandoned:
            raise _stalled(configs, limit_s) from exc
        raise
    watchdog.cancel()
    if clients.settle():  # it finished just as the watchdog gave up on it
        with contextlib.suppress(Exception):
            client.close()
        clients.close()
        raise _stalled(configs, limit_s)
    return client


def _stalled(configs: dict[str, Any], limit_s: float) -> KafkaTimeoutError:
    protocol = configs.get("security_protocol", "PLAINTEXT")
    return KafkaTimeoutError(
        f"no usable connection to {configs.get('bootstrap_servers')} within {limit_s:g}s: "
        f"the broker never finished the {protocol} handshake (does its listener speak {protocol}?)"
    )


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
