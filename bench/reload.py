"""From a person's approval to the serving app answering with the new version, measured.

Each round stages a version the way the optimizer and the shadow runner leave it, approves it
(`sidecar.store.promotions.approve`, one transaction, as the CLI and the API do) and wakes the
outbox relay, as a running sidecar's API does after a decision. Two serving apps, each a
separate process with a HotPrompt (one on the published file, one on the prompts topic), print
every version they switch to; a round ends when both serve the new one. Prints one JSON line
with p50/p99 seconds per source; the goals are p99 <= 0.5 s (file) and <= 2 s (Kafka), against
the 60 s client cache TTL of Langfuse's and MLflow's prompt registries.

    .venv/bin/python bench/reload.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from sqlalchemy import Engine

from sidecar.client import HotPrompt
from sidecar.metrics import Metrics
from sidecar.promote.lifecycle import Actor
from sidecar.promote.publishers import FilePublisher, KafkaPublisher
from sidecar.promote.relay import OutboxRelay
from sidecar.runtime.kafka import ensure_topics, kafka_cluster
from sidecar.settings import load_settings
from sidecar.store.candidates import insert_candidate, mark_proposed
from sidecar.store.database import create_database_engine, migrate
from sidecar.store.promotions import approve, transition
from sidecar.store.repository import seed_prompt

NAME = "customer-care"
ROUND_TIMEOUT_S = 30.0
ANCHOR_TTL_S = 60.0


def serve(source: str) -> None:
    """The serving app's side (run as `reload.py --serve SOURCE`): print each version it serves
    from now on, until its standard input closes."""
    prompt = HotPrompt(NAME, source, poll_interval_s=1.0)
    prompt.on_change(lambda document: print(document.version, flush=True))
    with prompt:
        print("started", flush=True)
        sys.stdin.read()


class ServingApp:
    """A `--serve` child process and the time each version's line reached us."""

    def __init__(self, source: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.seen: queue.Queue[tuple[str, float]] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, lines: IO[str]) -> None:
        for line in lines:
            self.seen.put((line.strip(), time.perf_counter()))

    def wait_for(self, line: str) -> float:
        """When `line` came, skipping the lines before it."""
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        while True:
            got, at = self.seen.get(timeout=max(0.0, deadline - time.monotonic()))
            if got == line:
                return at

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=ROUND_TIMEOUT_S)


def staged(engine: Engine, round_number: int) -> int:
    """A new version awaiting approval, as the optimizer and the shadow gate leave one."""
    now = datetime.now(UTC)
    components = {"system_prompt": f"Answer the customer's question first (edit {round_number})."}
    version = insert_candidate(engine, NAME, components, [1], None, "edit", [], now).version
    mark_proposed(engine, NAME, [version], "beats the champion", now)
    for status in ("shadow", "awaiting_approval"):
        evidence = {"shadow": {"n": 40, "p_value": 0.01}} if status == "awaiting_approval" else None
        transition(
            engine, NAME, version, status, actor=Actor.SHADOW, by="shadow", reason="gate",
            now=now, evidence=evidence,
        )  # fmt: skip
    return version


def rounds(engine: Engine, relay: OutboxRelay, apps: dict[str, ServingApp], count: int) -> dict:
    """Seconds from approve() to each app serving the version, per round and source."""
    took: dict[str, list[float]] = {source: [] for source in apps}
    for round_number in range(count + 1):
        version = staged(engine, round_number)
        started = time.perf_counter()
        approve(
            engine, NAME, version, by="bench", note=None, force=False,
            targets=("file", "kafka"), now=datetime.now(UTC),
        )  # fmt: skip
        relay.wake()
        for source, app in apps.items():
            served = app.wait_for(str(version)) - started
            if round_number:
                took[source].append(served)
    return took


def figures(seconds: list[float], goal_s: float) -> dict[str, object]:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {
        "p50_s": round(cuts[49], 4),
        "p99_s": round(cuts[98], 4),
        "max_s": round(max(seconds), 4),
        "goal_p99_s": goal_s,
        "vs_60s_ttl_p99": round(ANCHOR_TTL_S / cuts[98]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with (
        kafka_cluster(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as servers,
        tempfile.TemporaryDirectory() as workdir,
    ):
        topic = f"bench-prompts-{uuid.uuid4().hex[:8]}"
        ensure_topics(servers, [topic], compacted=[topic])
        settings = load_settings(
            kafka_bootstrap_servers=servers, prompts_topic=topic, publish_dir=Path(workdir)
        )
        engine = create_database_engine(f"sqlite:///{Path(workdir) / 'bench.db'}")
        migrate(engine)
        seed_prompt(engine, NAME, {"system_prompt": "You are a helpful agent."}, datetime.now(UTC))
        file = FilePublisher(settings.publish_dir)
        publishers = {"file": file, "kafka": KafkaPublisher(settings)}
        relay = OutboxRelay(
            engine, publishers, Metrics([NAME], publishers), poll_interval_s=1.0
        ).start()
        apps = {
            "file": ServingApp(f"file://{file.path_for(NAME)}"),
            "kafka": ServingApp(f"kafka://{servers}/{topic}"),
        }
        try:
            for app in apps.values():
                app.wait_for("started")
            took = rounds(engine, relay, apps, args.rounds)
        finally:
            for app in apps.values():
                app.stop()
            relay.stop()
            engine.dispose()
    result = {
        "bench": "reload",
        "rounds": args.rounds,
        "file": figures(took["file"], 0.5),
        "kafka": figures(took["kafka"], 2.0),
        "anchor": "60 s client cache TTL (Langfuse, MLflow); 60-120 s for a ConfigMap volume",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
