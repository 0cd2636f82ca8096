"""Our GEPA engine against the `gepa` library (0.1.4, a dev-only dependency, through its adapter
API) in one simulated world, same budget, several seeds.

The world is the test LLM server in its own process: a task model that follows its system prompt
literally, a judge that scores a reply for naming a next step, courtesy and answering the
question (with feedback saying what is missing), and a reflection model that fixes what the
feedback names. Both engines reach it through litellm with the same judge prompt. The hidden
score of a prompt is the judge rule applied locally to the task rule's replies on held-out
questions: no engine sees it.

Paid calls are metric calls (a task call plus its judgment). Ours starts from live traffic the
sidecar has already judged (the champion's evaluations are free) and caches every evaluation;
a warm run on shifted traffic starts from the frontier the cold run left.

    .venv/bin/python bench/optimize_parity.py [--seeds 5] [--budget 150]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar.events import ConsumedEvent
from sidecar.judge.judge import Judge
from sidecar.llm.gateway import Gateway, load_litellm
from sidecar.optimize.engine import OptimizationRun
from sidecar.store.candidates import candidates_of
from sidecar.store.database import create_database_engine, migrate
from sidecar.store.judgments import JudgmentRecord, store_judgments
from sidecar.store.repository import seed_prompt, store_events, transaction
from sidecar.store.tables import Event
from tests.helpers import consumed
from tests.llm_server import rule_score, task_reply
from tests.world import RUBRIC, SEED, SPEC, world_settings

ROOT = Path(__file__).resolve().parent.parent
TRAFFIC = [
    ("shipping", "Where is my order?"),
    ("billing", "Why was I charged twice this month?"),
    ("returns", "How do I return a jacket that does not fit?"),
    ("account", "How do I change my email address?"),
]
SHIFTED = [
    ("shipping", "My parcel says delivered but nothing arrived."),
    ("billing", "Can I get an invoice for my last purchase?"),
    ("returns", "Can I exchange shoes for a bigger size?"),
]
HELD_OUT = [
    "When will my refund arrive?",
    "Do you ship to Norway?",
    "My password reset email never came.",
    "Can I cancel my subscription today?",
]


def hidden_score(system_prompt: str) -> float:
    return statistics.mean(rule_score(q, task_reply(system_prompt, q))[0] for q in HELD_OUT)


class Server:
    """The test LLM server in its own process (off this process's GIL)."""

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.llm_server"], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self.process.stdout is not None
        self.api_base = self.process.stdout.readline().strip()
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


def add_traffic(
    engine: Any, settings: Any, questions: list[tuple[str, str]], n: int, seed: int
) -> None:
    """n events answered by the seed prompt, judged (as the sidecar's judge workers would)."""
    rng = random.Random(seed)
    events = []
    for index, item in enumerate(consumed(rng, n, first_offset=seed * 10_000)):
        segment, question = questions[index % len(questions)]
        event = item.event.model_copy(
            update={
                "inputs": {"user_message": question},
                "output": task_reply(SEED, question),
                "metadata": {"segment": segment},
            }
        )
        events.append(ConsumedEvent(event, item.partition, item.offset))
    now = datetime.now(UTC)
    store_events(engine, events, {}, now)
    version = Judge(Gateway(settings), RUBRIC).version
    with transaction(engine) as connection:
        rows = connection.execute(Event.__table__.select()).mappings().all()
    store_judgments(
        engine,
        [
            JudgmentRecord(
                row["id"],
                "customer-care",
                1,
                version,
                *rule_score(row["inputs"]["user_message"], row["output"]),
            )
            for row in rows
        ],
        now,
    )


def ours(api_base: str, seed: int, budget: int, directory: Path) -> dict[str, Any]:
    settings = world_settings(api_base, run_max_metric_calls=budget, optimize_patience=4)

    def fresh(name: str) -> Any:
        engine = create_database_engine(f"sqlite:///{directory / name}")
        migrate(engine)
        seed_prompt(engine, "customer-care", {"system_prompt": SEED}, datetime.now(UTC))
        return engine

    def best_prompt(engine: Any, report: Any) -> str:
        return str(
            candidates_of(engine, "customer-care")[report.best_version].components["system_prompt"]
        )

    engine = fresh("ours.db")
    add_traffic(engine, settings, TRAFFIC, 40, seed)
    cold = asyncio.run(OptimizationRun(engine, settings, SPEC, seed=seed).execute())
    cold_score = hidden_score(best_prompt(engine, cold))
    add_traffic(engine, settings, SHIFTED, 30, seed + 100)
    warm = asyncio.run(OptimizationRun(engine, settings, SPEC, seed=seed).execute())
    warm_score = hidden_score(best_prompt(engine, warm))
    shifted = fresh("shifted.db")
    add_traffic(shifted, settings, TRAFFIC, 40, seed)
    add_traffic(shifted, settings, SHIFTED, 30, seed + 100)
    cold_shifted = asyncio.run(OptimizationRun(shifted, settings, SPEC, seed=seed).execute())
    return {
        "calls": cold.metric_calls,
        "hidden": cold_score,
        "warm_calls": warm.metric_calls,
        "warm_hidden": warm_score,
        "cold_shifted_calls": cold_shifted.metric_calls,
        "cold_shifted_hidden": hidden_score(best_prompt(shifted, cold_shifted)),
    }


def reference(api_base: str, seed: int, budget: int) -> dict[str, Any]:
    """The `gepa` library on the same world, through its adapter API."""
    import gepa
    from gepa.core.adapter import EvaluationBatch

    litellm = load_litellm()
    settings = world_settings(api_base)
    judge = Judge(Gateway(settings), RUBRIC)
    rng = random.Random(seed)
    items = [{"question": q, "segment": s} for s, q in (TRAFFIC * 10)]
    rng.shuffle(items)
    trainset, valset = items[:20], items[20:]

    class Adapter:
        propose_new_texts = None

        def evaluate(
            self,
            batch: list[dict[str, str]],
            candidate: dict[str, str],
            capture_traces: bool = False,
        ) -> Any:
            async def run_all() -> list[tuple[str, float, str]]:
                async def one(item: dict[str, str]) -> tuple[str, float, str]:
                    completion = await judge.gateway.complete(
                        "task",
                        [
                            {"role": "system", "content": candidate["system_prompt"]},
                            {"role": "user", "content": item["question"]},
                        ],
                    )
                    verdict = await judge.score({"user_message": item["question"]}, completion.text)
                    return completion.text, verdict.score, verdict.feedback

                return list(await asyncio.gather(*(one(item) for item in batch)))

            results = asyncio.run(run_all())
            return EvaluationBatch(
                outputs=[r[0] for r in results],
                scores=[r[1] for r in results],
                trajectories=[
                    {"question": item["question"], "output": r[0], "feedback": r[2]}
                    for item, r in zip(batch, results, strict=True)
                ]
                if capture_traces
                else None,
            )

        def make_reflective_dataset(
            self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
        ) -> dict[str, list[dict[str, str]]]:
            records = [
                {
                    "Inputs": t["question"],
                    "Generated Outputs": t["output"],
                    "Feedback": t["feedback"],
                }
                for t in eval_batch.trajectories
            ]
            return {name: records for name in components_to_update}

    def reflection_lm(prompt: Any) -> str:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        response = litellm.completion(
            model="openai/local", api_base=api_base, api_key="unused", messages=messages
        )
        return str(response.choices[0].message.content)

    class Quiet:
        def log(self, message: str) -> None:
            pass

    result = gepa.optimize(
        seed_candidate={"system_prompt": SEED},
        trainset=trainset,
        valset=valset,
        adapter=Adapter(),
        reflection_lm=reflection_lm,
        max_metric_calls=budget,
        reflection_minibatch_size=3,
        use_merge=True,
        seed=seed,
        logger=Quiet(),
        display_progress_bar=False,
    )
    best = result.best_candidate
    text = best["system_prompt"] if isinstance(best, dict) else str(best)
    return {"calls": int(result.total_metric_calls or 0), "hidden": hidden_score(text)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=150)
    args = parser.parse_args()
    rows = []
    with Server() as server:
        for seed in range(1, args.seeds + 1):
            with tempfile.TemporaryDirectory() as directory:
                mine = ours(server.api_base, seed, args.budget, Path(directory))
            theirs = reference(server.api_base, seed, args.budget)
            rows.append({"seed": seed, "ours": mine, "gepa": theirs})
    ours_calls = statistics.mean(r["ours"]["calls"] for r in rows)
    gepa_calls = statistics.mean(r["gepa"]["calls"] for r in rows)
    warm_calls = statistics.mean(r["ours"]["warm_calls"] for r in rows)
    cold_calls = statistics.mean(r["ours"]["cold_shifted_calls"] for r in rows)
    print(
        json.dumps(
            {
                "bench": "optimize_parity",
                "seeds": args.seeds,
                "budget_metric_calls": args.budget,
                "ours_hidden": round(statistics.mean(r["ours"]["hidden"] for r in rows), 3),
                "gepa_hidden": round(statistics.mean(r["gepa"]["hidden"] for r in rows), 3),
                "ours_paid_calls": ours_calls,
                "gepa_paid_calls": gepa_calls,
                "calls_ratio": round(ours_calls / gepa_calls, 3) if gepa_calls else None,
                "warm_paid_calls": warm_calls,
                "cold_shifted_paid_calls": cold_calls,
                "warm_vs_cold": round(warm_calls / cold_calls, 3) if cold_calls else None,
                "warm_hidden": round(statistics.mean(r["ours"]["warm_hidden"] for r in rows), 3),
                "cold_shifted_hidden": round(
                    statistics.mean(r["ours"]["cold_shifted_hidden"] for r in rows), 3
                ),
                "per_seed": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
