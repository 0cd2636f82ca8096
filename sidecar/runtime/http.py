"""Serve an ASGI app with uvicorn on a background thread, so the consumer owns the main one."""

from __future__ import annotations

import contextlib
import threading
import time

import uvicorn
from fastapi import FastAPI

from sidecar.errors import ConfigError

START_TIMEOUT_S = 15.0


class HttpServer:
    """Starts listening in `start()` (or says why not); `stop()` lets requests finish."""

    def __init__(
        self, api: FastAPI, host: str, port: int, setting: str = "SIDECAR_HTTP_PORT"
    ) -> None:
        # log_config=None: uvicorn's records go through the process's own handler, so they
        # follow LOG_FORMAT (a JSON log stays JSON) instead of uvicorn's console format.
        config = uvicorn.Config(
            api, host=host, port=port, log_level="warning", access_log=False, log_config=None
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._address = f"{host}:{port}"
        self._setting = setting  # what to change when the port is taken

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    def _serve(self) -> None:
        # uvicorn exits the process (SystemExit) when it cannot bind; here that ends the thread
        # and `start()` reports it as a config error.
        with contextlib.suppress(SystemExit):
            self._server.run()

    def start(self) -> HttpServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"{self._setting}: cannot listen on {self._address}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Stop listening and let requests finish, for at most `timeout` seconds; False when
        the server thread still runs then (a daemon, left to end alone)."""
        self._server.should_exit = True
        self._thread.join(timeout)
        return not self._thread.is_alive()
