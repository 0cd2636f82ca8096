"""Helper processes the sidecar starts and owns (the embedded broker, the local model server).

Their output goes to a temporary file, never a pipe (a full pipe would stall them); start-up
waits until a readiness probe passes, and stopping is by PID: SIGTERM, then SIGKILL after a
grace period, always reaped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence

STOP_GRACE_S = 10.0
MAX_TAIL_CHARS = 300


class ChildFailed(Exception):
    """The child exited or never became ready; the message is one line with its last output."""


class ChildProcess:
    """One child process: `start()` returns once `ready()` holds, `stop()` always reaps it."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.command = list(command)
        self.env = dict(env) if env is not None else None
        self.grace_s = grace_s
        self.exit_code: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="sidecar-child-", suffix=".log")  # noqa: SIM115

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, ready: Callable[[], bool], timeout_s: float) -> None:
        """Launch, then poll `ready()` until it holds; `ChildFailed` (and a stopped child) if
        the process exits first or `timeout_s` passes."""
        self._process = subprocess.Popen(
            self.command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise ChildFailed(f"exited with code {code} at start: {self.tail()}")
                if ready():
                    return
                if time.monotonic() > deadline:
                    raise ChildFailed(f"not ready after {timeout_s:g}s: {self.tail()}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def printed(self, text: str) -> bool:
        """Whether the child's output so far contains `text`."""
        if self._log.closed:
            return False
        with open(self._log.name, "rb") as log:
            return text.encode() in log.read()

    def tail(self) -> str:
        """The child's last two non-empty output lines, on one line ("no output" when silent);
        two, because runtimes often end with a hint after the error itself."""
        if self._log.closed:
            return "no output"
        # Our own handle: seeking the shared one would move the child's write offset too.
        with open(self._log.name, "rb") as log:
            log.seek(max(0, os.fstat(log.fileno()).st_size - 8192))
            lines = log.read().decode(errors="replace").splitlines()
        last = [" ".join(line.split()) for line in lines if line.strip()][-2:]
        return (" | ".join(last) or "no output")[-MAX_TAIL_CHARS:]

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after the grace period, then reap; safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self.grace_s)
                except subprocess.TimeoutExpired:
                    process.kill()
            self.exit_code = process.wait()

    def close(self) -> None:
        self.stop()
        self._log.close()
