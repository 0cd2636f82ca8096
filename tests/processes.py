"""`gepa-sidecar run` as a child process, as an operator runs it: its environment, its log,
its /metrics, and a fixture that starts as many as a test needs and kills what is left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import scaled

if TYPE_CHECKING:
    from tests.conftest import Topics

SERVING = re.compile(rb"sidecar serving on port (\d+)")
PAUSED = "gepa_sidecar_ingest_paused"  # 1 while fetched records wait for the writer


def sidecar_env(kafka_bootstrap: str, topics: Topics, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        SIDECAR_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SIDECAR_TRAFFIC_TOPIC=topics.traffic,
        SIDECAR_DLQ_TOPIC=topics.dlq,
        SIDECAR_CONSUMER_GROUP=topics.group,
        SIDECAR_DATABASE_URL=database_url,
        SIDECAR_KAFKA_SESSION_TIMEOUT_MS="6000",
        SIDECAR_KAFKA_HEARTBEAT_INTERVAL_MS="1000",
        SIDECAR_KAFKA_AUTO_OFFSET_RESET="earliest",
        SIDECAR_INGEST_BATCH_SIZE="20",
        SIDECAR_HTTP_PORT="0",
        SIDECAR_HTTP_HOST="127.0.0.1",
        SIDECAR_PROMPTS_TOPIC=f"{topics.traffic}.prompts",
    )
    return env


@dataclass(frozen=True)
class Sidecar:
    process: subprocess.Popen[bytes]
    log: Path

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of the process's /metrics (None before the server is up)."""
        return next((value for labels, value in self.samples(name) if not labels), None)

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample called `name` in the process's /metrics, with its labels (none before
        the server is up)."""
        found = SERVING.search(self.log.read_bytes())
        if found is None:
            return []
        url = f"http://127.0.0.1:{int(found[1])}/metrics"
        page = httpx.get(url, timeout=scaled(10)).text
        return [
            (dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(page)
            for sample in family.samples
            if sample.name == name
        ]

    def paused(self) -> bool:
        return self.metric(PAUSED) == 1.0

    @property
    def base_url(self) -> str:
        """Its HTTP address, once it has logged that it serves."""
        found = SERVING.search(self.log.read_bytes())
        assert found is not None, "the sidecar has not started serving"
        return f"http://127.0.0.1:{int(found[1])}"


Start = Callable[[dict[str, str]], Sidecar]


def sidecar_processes(tmp_path: Path) -> Iterator[Start]:
    """Behind the `start_sidecar` fixture: start(env) runs one more sidecar."""
    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(env: dict[str, str]) -> Sidecar:
        path = tmp_path / f"sidecar-{len(started)}.log"
        log = path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        return Sidecar(process, path)

    yield start
    for process, log in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
