"""Child processes the sidecar owns: failures at start are one line, and stopping always reaps."""

from __future__ import annotations

import signal
import socket
import sys

import pytest

from sidecar.errors import BrokerError
from sidecar.runtime.broker import EmbeddedBroker
from sidecar.runtime.child import ChildFailed, ChildProcess
from tests.helpers import scaled


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_exits_at_start_fails_with_its_last_line() -> None:
    child = ChildProcess(python("import sys; print('first'); print('disk full'); sys.exit(3)"))
    with pytest.raises(ChildFailed, match=r"exited with code 3 at start: first \| disk full$"):
        child.start(lambda: False, scaled(30))
    assert not child.running
    assert child.exit_code == 3
    child.close()


def test_a_child_that_never_gets_ready_is_stopped() -> None:
    child = ChildProcess(python("import time; print('loading', flush=True); time.sleep(60)"))
    with pytest.raises(ChildFailed, match=r"not ready after 0.5s: loading"):
        child.start(lambda: False, 0.5)
    assert not child.running
    assert child.exit_code == -signal.SIGTERM
    child.close()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    child = ChildProcess(python(stubborn), grace_s=0.5)
    child.start(lambda: child.tail() == "up", scaled(30))
    assert child.running
    child.stop()
    assert child.exit_code == -signal.SIGKILL
    child.stop()  # a second stop is harmless
    child.close()


def test_the_embedded_broker_on_a_taken_port_is_a_one_line_broker_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(port=port)
        with pytest.raises(BrokerError) as raised:
            broker.start()
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "Address in use" in message
    assert "\n" not in message
