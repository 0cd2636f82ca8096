"""What the SDK costs the serving app on its request path, measured in one run.

- get(): ns per `HotPrompt.get()` of a loaded prompt, against reading a plain attribute in the
  same loop shape (ratio); goal <= 2 us.
- emit(): p50/p99/max us per `TrafficEmitter.emit()`, paced at a steady request rate and back
  to back, with the broker up (the embedded broker, or KAFKA_BOOTSTRAP_SERVERS) and with it
  down (a dead address, so the queue fills and events are dropped and counted); goal p99 <=
  50 us both ways, never blocking.

    .venv/bin/python bench/sdk.py [--events 20000] [--rate 2000] [--gets 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any

from sidecar.client import HotPrompt, TrafficEmitter
from sidecar.events import PromptDocument
from sidecar.promote.publishers import FilePublisher
from sidecar.runtime.broker import free_port
from sidecar.runtime.kafka import ensure_topics, kafka_cluster

NAME = "customer-care"
REPEATS = 5


class Holder:
    """The baseline: a plain object whose attribute holds the document."""

    def __init__(self, document: PromptDocument) -> None:
        self.document = document


def get_ns(count: int) -> dict[str, float]:
    """Median ns/op over REPEATS loops of `count` reads, HotPrompt.get() and the baseline."""
    with tempfile.TemporaryDirectory() as directory:
        publisher = FilePublisher(Path(directory))
        document = PromptDocument.build(
            name=NAME,
            version=2,
            components={"system_prompt": "Help."},
            created_at=datetime.now(UTC),
        )
        publisher.publish(document, 1)
        with HotPrompt(NAME, f"file://{publisher.path_for(NAME)}") as prompt:
            deadline = time.monotonic() + 30
            while prompt.get() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the prompt did not load")
                time.sleep(0.01)
            holder = Holder(document)
            got, plain = [], []
            for _ in range(REPEATS):
                started = time.perf_counter_ns()
                for _ in repeat(None, count):
                    prompt.get()
                got.append((time.perf_counter_ns() - started) / count)
                started = time.perf_counter_ns()
                for _ in repeat(None, count):
                    holder.document  # noqa: B018
                plain.append((time.perf_counter_ns() - started) / count)
    return {"get": statistics.median(got), "attribute": statistics.median(plain)}


def emit_us(emitter: TrafficEmitter, count: int, rate: float | None) -> dict[str, Any]:
    """Time each of `count` emits: paced at `rate` per second, like the requests of a busy app
    (each emit then starts cold, after a pause), or back to back when `rate` is None."""
    took: list[float] = []
    next_at = time.perf_counter()
    for index in range(count):
        started = time.perf_counter_ns()
        emitter.emit(
            {"user_message": f"Where is my order {index}? It was due last week."},
            "Your order left our warehouse yesterday and arrives in two days.",
            3,
            trace={"model": "m", "latency_ms": 812},
            metadata={"segment": "shipping"},
        )
        took.append((time.perf_counter_ns() - started) / 1000)
        if rate is not None:
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.perf_counter()))
    cuts = statistics.quantiles(took, n=100, method="inclusive")
    return {"p50_us": round(cuts[49], 1), "p99_us": round(cuts[98], 1), "max_us": round(max(took))}


def emit_figures(emitter: TrafficEmitter, count: int, rate: float) -> dict[str, Any]:
    emit_us(emitter, 200, None)
    return {
        "paced": emit_us(emitter, count, rate),
        "back_to_back": emit_us(emitter, count, None),
    }


def emit_up(servers: str, count: int, rate: float) -> dict[str, Any]:
    topic = f"bench-traffic-{uuid.uuid4().hex[:8]}"
    ensure_topics(servers, [topic])
    emitter = TrafficEmitter(servers, topic, prompt_name=NAME, queue_size=2 * count + 200)
    figures = emit_figures(emitter, count, rate)
    emitter.close(30)
    return {**figures, "sent": emitter.sent, "dropped": emitter.dropped_by_reason}


def emit_down(count: int, rate: float) -> dict[str, Any]:
    emitter = TrafficEmitter(f"127.0.0.1:{free_port()}", prompt_name=NAME)
    figures = emit_figures(emitter, count, rate)
    emitter.close(1)
    return {**figures, "sent": emitter.sent, "dropped": emitter.dropped_by_reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2_000.0, help="emits per second")
    parser.add_argument("--gets", type=int, default=2_000_000)
    args = parser.parse_args()
    reads = get_ns(args.gets)
    with kafka_cluster(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as servers:
        up = emit_up(servers, args.events, args.rate)
    down = emit_down(args.events, args.rate)
    result = {
        "bench": "sdk",
        "get_ns": round(reads["get"], 1),
        "attribute_ns": round(reads["attribute"], 1),
        "get_ratio": round(reads["get"] / reads["attribute"], 2),
        "events": args.events,
        "emit_rate_per_s": args.rate,
        "emit_broker_up": up,
        "emit_broker_down": down,
        "goal": {"get_ns": "<= 2000", "emit_p99_us": "<= 50 (broker up and down)"},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
