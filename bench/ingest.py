"""Ingest throughput against raw kafka-python consumption of the same records, same run.

Two arms, each paired in every round with a bare kafka-python consumer run just before it:
- `in-process`: the ingest path alone (TrafficConsumer and its writer process) in this process;
- `subprocess`: what users run, a real `gepa-sidecar run` child (HTTP server, judge worker,
  scheduler, outbox relay), its judge, task and reflection models pointed at a closed port so
  every judge call fails and is logged, as with a model outage, and a managed prompt in its
  CONFIG_FILE so the judge worker really works through the stored events.
Every run reads N pre-produced records from a topic of several partitions with a fresh consumer
group at `earliest`, and is timed the same way: from the first progress seen to the last record
(raw: received; sidecar: validated, deduplicated, stored in SQLite and counted), so start-up
and the group join are not timed. The child's progress is read from its database's ingest
counts (a one-row read on a separate connection), never from the child itself. Prints one JSON
line; each arm's `ratio` is the median of its per-round ratios; the goal is >= 0.9.

    .venv/bin/python bench/ingest.py [--events 20000] [--rounds 3] [--partitions 4]
                                     [--arm both|in-process|subprocess]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from sidecar.ingest.consumer import TrafficConsumer
from sidecar.metrics import PREFIX, Metrics
from sidecar.runtime.broker import free_port
from sidecar.runtime.child import ChildFailed, ChildProcess
from sidecar.runtime.kafka import ensure_topics, kafka_cluster
from sidecar.settings import load_settings
from sidecar.store.database import create_database_engine, migrate

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "customer-care"
GROUP_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
PROGRESS_EVERY_S = 0.05
ARM_TIMEOUT_S = 600.0
CHILD_START_TIMEOUT_S = 60.0
CONFIG = f"""\
prompts:
  - name: {PROMPT}
    seed: {{system_prompt: "You are a helpful customer care assistant."}}
    task:
      messages:
        - {{role: system, content: "{{system_prompt}}"}}
        - {{role: user, content: "{{user_message}}"}}
    judge:
      rubric: "Score 1.0 when the reply answers the question and names the next step."
"""

Progress = Callable[[], int]


def produce(servers: str, topic: str, count: int) -> int:
    rng = random.Random(42)
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=20)
    size = 0
    for index in range(count):
        value = json.dumps(
            {
                "schema_version": 1,
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "prompt_name": PROMPT,
                "prompt_version": 1,
                "timestamp": datetime.now(UTC).isoformat(),
                "inputs": {"user_message": f"Where is my order {index}? It was due last week."},
                "output": "Your order left our warehouse yesterday and arrives in two days.",
                "trace": {"model": "m", "latency_ms": 812, "tokens": {"prompt": 120}},
                "metadata": {"segment": rng.choice(["billing", "shipping"]), "locale": "en"},
            }
        ).encode()
        size += len(value)
        producer.send(topic, value=value)
    producer.flush()
    producer.close()
    return size // count


def rate_until(progress: Progress, total: int, alive: Callable[[], bool] = lambda: True) -> float:
    """Records per second from the first progress seen to the last record: what the first
    observation already counts is left out, so start-up and the group join are not timed."""
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + ARM_TIMEOUT_S
    while True:
        seen, now = progress(), time.perf_counter()
        if seen >= total:
            break
        if first is None and seen > 0:
            first = (now, seen)
        if not alive() or time.monotonic() > deadline:
            raise RuntimeError(f"progress stopped at {seen} of {total} records")
        time.sleep(PROGRESS_EVERY_S)
    if first is None:
        raise RuntimeError("every record arrived at once: produce more events")
    return (total - first[1]) / (now - first[0])


def raw_consume(servers: str, topic: str, count: int) -> float:
    """Records per second of a plain KafkaConsumer, from its first non-empty poll to the last."""
    consumer = KafkaConsumer(
        bootstrap_servers=servers,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        **GROUP_SETTINGS,
    )
    consumer.subscribe([topic])
    seen = 0
    first: tuple[float, int] | None = None
    while seen < count:
        seen += sum(len(batch) for batch in consumer.poll(timeout_ms=200).values())
        if first is None and seen:
            first = (time.perf_counter(), seen)
    elapsed = time.perf_counter() - first[0] if first is not None else 0.0
    consumer.close(autocommit=False)
    if first is None or elapsed <= 0:
        raise RuntimeError("every record arrived in one poll: produce more events")
    return (count - first[1]) / elapsed


def in_process_ingest(servers: str, topic: str, count: int, workdir: Path) -> float:
    """Records per second stored and counted by a TrafficConsumer run on a thread here."""
    database = workdir / "sidecar.db"
    settings = load_settings(
        kafka_bootstrap_servers=servers,
        traffic_topic=topic,
        dlq_topic=topic + ".dlq",
        consumer_group=f"sidecar-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{database}",
        kafka_session_timeout_ms=GROUP_SETTINGS["session_timeout_ms"],
        kafka_heartbeat_interval_ms=GROUP_SETTINGS["heartbeat_interval_ms"],
        kafka_auto_offset_reset="earliest",
    )
    engine = create_database_engine(settings.database_url)
    migrate(engine)
    metrics = Metrics(managed=[PROMPT])
    consumer = TrafficConsumer(settings, servers, metrics)
    accepted = {"prompt": PROMPT, "outcome": "accepted"}
    runner = threading.Thread(target=consumer.run, daemon=True)
    runner.start()
    try:
        return rate_until(
            lambda: int(
                metrics.registry.get_sample_value(PREFIX + "events_consumed_total", accepted) or 0
            ),
            count,
            runner.is_alive,
        )
    finally:
        consumer.stop()
        runner.join()
        engine.dispose()


def sidecar_env(servers: str, topic: str, workdir: Path) -> dict[str, str]:
    """`gepa-sidecar run` as an operator configures it, with every model role on a closed
    port; this checkout's code first on the path."""
    database = workdir / "sidecar.db"
    config = workdir / "config.yaml"
    config.write_text(CONFIG)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        SIDECAR_KAFKA_BOOTSTRAP_SERVERS=servers,
        SIDECAR_TRAFFIC_TOPIC=topic,
        SIDECAR_DLQ_TOPIC=topic + ".dlq",
        SIDECAR_PROMPTS_TOPIC=topic + ".prompts",
        SIDECAR_CONSUMER_GROUP=f"run-{uuid.uuid4().hex[:8]}",
        SIDECAR_KAFKA_SESSION_TIMEOUT_MS=str(GROUP_SETTINGS["session_timeout_ms"]),
        SIDECAR_KAFKA_HEARTBEAT_INTERVAL_MS=str(GROUP_SETTINGS["heartbeat_interval_ms"]),
        SIDECAR_KAFKA_AUTO_OFFSET_RESET="earliest",
        SIDECAR_DATABASE_URL=f"sqlite:///{database}",
        SIDECAR_CONFIG_FILE=str(config),
        SIDECAR_PUBLISH_DIR=str(workdir / "prompts"),
        SIDECAR_JUDGE_MODEL="openai/local",
        SIDECAR_JUDGE_API_BASE=closed,
        SIDECAR_JUDGE_API_KEY="unused",
        SIDECAR_HTTP_HOST="127.0.0.1",
        SIDECAR_HTTP_PORT=str(free_port()),
        SIDECAR_SHUTDOWN_GRACE_S="10",
    )
    return env


def stored_count(database: Path) -> int:
    """The child's `accepted` total, read on a connection of our own (0 before it migrated)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            row = connection.execute(
                "SELECT count FROM ingest_counts WHERE prompt_name = ? AND outcome = 'accepted'",
                (PROMPT,),
            ).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


def subprocess_ingest(servers: str, topic: str, count: int, workdir: Path) -> float:
    """Records per second stored and counted by a `gepa-sidecar run` child process. Its output
    goes to a file (ChildProcess), so a chatty child never blocks on a full pipe."""
    env = sidecar_env(servers, topic, workdir)
    child = ChildProcess([sys.executable, "-m", "sidecar", "run"], env, grace_s=15.0)
    try:
        child.start(lambda: child.printed("sidecar serving on port"), CHILD_START_TIMEOUT_S)
        database = workdir / "sidecar.db"
        return rate_until(lambda: stored_count(database), count, lambda: child.running)
    except (ChildFailed, RuntimeError) as exc:
        raise RuntimeError(f"gepa-sidecar run: {exc}: {child.tail()}") from exc
    finally:
        child.close()


ARMS = {"in-process": in_process_ingest, "subprocess": subprocess_ingest}


def summary(raw: list[float], arm: list[float]) -> dict[str, object]:
    ratios = [a / r for a, r in zip(arm, raw, strict=True)]
    return {
        "raw_consume_events_per_s": round(statistics.median(raw)),
        "sidecar_ingest_events_per_s": round(statistics.median(arm)),
        "ratio": round(statistics.median(ratios), 3),
        "round_ratios": [round(ratio, 3) for ratio in ratios],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--arm", choices=["both", *ARMS], default="both")
    args = parser.parse_args()
    arms = list(ARMS) if args.arm == "both" else [args.arm]
    raw: dict[str, list[float]] = {arm: [] for arm in arms}
    ingest: dict[str, list[float]] = {arm: [] for arm in arms}
    with kafka_cluster(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as servers:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(servers, [topic, topic + ".dlq"], partitions=args.partitions)
        mean_bytes = produce(servers, topic, args.events)
        with tempfile.TemporaryDirectory() as workdir:
            for round_ in range(args.rounds):
                for arm in arms:
                    raw[arm].append(raw_consume(servers, topic, args.events))
                    place = Path(workdir) / f"{arm}-{round_}"
                    place.mkdir()
                    ingest[arm].append(ARMS[arm](servers, topic, args.events, place))
    result = {
        "bench": "ingest",
        "events": args.events,
        "partitions": args.partitions,
        "database": "sqlite",
        "mean_event_bytes": mean_bytes,
        "rounds": args.rounds,
        **{arm.replace("-", "_"): summary(raw[arm], ingest[arm]) for arm in arms},
        "goal": ">= 0.9",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
