"""Judge throughput against the ideal: the test LLM server answers every call after a fixed
100 ms, so with 32 calls in flight at most 320 judgments/s are possible.

Three arms, same run, the server in its own process: `raw_litellm` sends the same request
straight through `litellm.acompletion` (the floor); `judge` scores through our gateway, judge
and parser at concurrency 32; `worker` is the sidecar's judge worker, reading stored events
from SQLite and writing each verdict back. Prints one JSON line; the goal is ratio >= 0.9.
`cpu_ms_per_judgment` is what this process spends per call (mostly inside litellm); the ideal
rate is out of reach once it exceeds `cpu_ms_budget_at_ideal`, whatever the concurrency.

    .venv/bin/python bench/judge.py [--judgments 1280] [--latency 0.1] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar.judge.judge import Judge
from sidecar.judge.rubric import JUDGMENT_SCHEMA, score_messages
from sidecar.judge.worker import JudgeWorker
from sidecar.llm.gateway import Gateway, load_litellm
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.settings import JudgeBlock, PromptsConfig, PromptSpec, load_settings
from sidecar.store.database import create_database_engine, migrate
from sidecar.store.repository import status_summary, store_events
from tests.helpers import consumed

RUBRIC = "Score 1.0 when the reply names the next step, is polite and on topic."


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.llm_server", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def direct(settings: object, n: int) -> tuple[float, float]:
    """Judgments per second, and CPU milliseconds this process spent per judgment."""
    judge = Judge(Gateway(settings), RUBRIC)  # type: ignore[arg-type]
    inputs = {"user_message": "Where is my order?"}

    async def many(count: int) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(judge.score(inputs, f"Reply {i}: it ships.") for i in range(count)))
        return time.perf_counter() - started

    run_with_models(many(64))  # warm: connections, litellm's lazy imports
    cpu_before = cpu_s()
    elapsed = run_with_models(many(n))
    return n / elapsed, (cpu_s() - cpu_before) * 1000 / n


def raw_litellm(api_base: str, n: int, concurrency: int) -> float:
    """The same judge request straight through `litellm.acompletion`: the floor our gateway,
    judge and parsing add to."""
    litellm = load_litellm()
    messages = score_messages(RUBRIC, {"user_message": "Where is my order?"}, "It ships.")

    async def many(count: int) -> float:
        limit = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with limit:
                await litellm.acompletion(
                    model="openai/local",
                    api_base=api_base,
                    api_key="unused",
                    messages=messages,
                    response_format=JUDGMENT_SCHEMA,
                    max_tokens=400,
                    temperature=0.0,
                )

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return time.perf_counter() - started

    run_with_models(many(64))
    return n / run_with_models(many(n))


def through_worker(settings: object, n: int, directory: Path) -> float:
    engine = create_database_engine(f"sqlite:///{directory / 'bench.db'}")
    migrate(engine)
    store_events(engine, consumed(random.Random(1), n), {}, datetime.now(UTC))
    prompts = PromptsConfig(
        prompts=[PromptSpec(name="customer-care", seed={"s": "x"}, judge=JudgeBlock(rubric=RUBRIC))]
    )
    metrics = Metrics(managed=[spec.name for spec in prompts.prompts])
    worker = JudgeWorker(engine, Gateway(settings, metrics), prompts, metrics)  # type: ignore[arg-type]
    started = time.perf_counter()
    worker.start()
    while status_summary(engine)["events"]["judged"] < n:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    worker.stop()
    engine.dispose()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--judgments", type=int, default=1280)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    load_litellm()
    process, api_base = start_server(args.latency)
    try:
        settings = load_settings(
            judge_model="openai/local",
            judge_api_base=api_base,
            judge_concurrency=args.concurrency,
            judge_poll_interval_s=0.05,
        )
        ideal = args.concurrency / args.latency
        raw_rate = raw_litellm(api_base, args.judgments, args.concurrency)
        judge_rate, cpu_ms = direct(settings, args.judgments)
        with tempfile.TemporaryDirectory() as directory:
            worker_rate = through_worker(settings, args.judgments, Path(directory))
    finally:
        process.terminate()
        process.wait(10)
    print(
        json.dumps(
            {
                "bench": "judge",
                "judgments": args.judgments,
                "latency_s": args.latency,
                "concurrency": args.concurrency,
                "ideal_per_s": round(ideal, 1),
                "judge_per_s": round(judge_rate, 1),
                "ratio": round(judge_rate / ideal, 3),
                "cpu_ms_per_judgment": round(cpu_ms, 2),
                "raw_litellm_per_s": round(raw_rate, 1),
                "judge_vs_raw_litellm": round(judge_rate / raw_rate, 3),
                "cpu_ms_budget_at_ideal": round(1000 / ideal, 2),
                "worker_per_s": round(worker_rate, 1),
                "worker_ratio": round(worker_rate / ideal, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
