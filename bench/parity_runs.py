"""The runs the parity benchmark compares, each in the hard world (tests/hard_world.py): our
engine on judged live traffic in a SQLite store, and the `gepa` library (0.1.4, dev-only)
through its adapter API on the same events, served by the same test server process.

Both reach the server through litellm, replay a candidate with the same task template and score
it with the same judge prompt; what each run found is scored by `hidden_score` (the noise-free
judge on held-out questions), which neither engine sees.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from sidecar.judge.judge import Judge, judge_for
from sidecar.llm.gateway import Gateway, load_litellm
from sidecar.llm.loop_clients import run_with_models
from sidecar.optimize.engine import OptimizationRun
from sidecar.optimize.task import render_task
from sidecar.store.candidates import candidates_of
from sidecar.store.database import create_database_engine, migrate
from tests.hard_traffic import hard_settings, seed_hard_world, store_traffic
from tests.hard_world import HARD_SEED, HARD_SPEC, HardWorld, hidden_score

ROOT = Path(__file__).resolve().parent.parent
Questions = list[tuple[str, str]]


@dataclass
class Outcome:
    """One run: what it paid (metric calls) and its best candidate (how good it is on held-out
    questions is `hidden`); `notes` says how it got there (stop reason, iterations, ...)."""

    paid_calls: int
    best: dict[str, str]
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden(self) -> float:
        return hidden_score(self.best)


class Server:
    """The test LLM server serving the hard world of `seed`, in its own process (off this
    process's GIL)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> Server:
        command = [sys.executable, "-m", "tests.llm_server", "--world", "hard"]
        self.process = subprocess.Popen(
            [*command, "--world-seed", str(self.seed)], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        line = self.process.stdout.readline().strip() if self.process.stdout else ""
        if not line.startswith("http"):
            self.process.kill()
            raise RuntimeError(f"the test LLM server did not start (printed {line!r})")
        self.api_base = line
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


class OursInWorld:
    """Our engine on a store of its own: `cold` seeds it with judged traffic and runs once;
    `warm` adds (shifted) traffic to the same store and runs again from the frontier left."""

    def __init__(self, api_base: str, directory: Path, seed: int, **overrides: Any) -> None:
        self.settings = hard_settings(api_base, **overrides)
        self.seed = seed
        self.world = HardWorld(seed=seed + 1000)  # judges live traffic, as production's judge
        self.url = f"sqlite:///{directory / 'store.db'}"
        self.db: Engine | None = None

    def cold(self, questions: Questions, budget: int, traffic_seed: int) -> Outcome:
        self.db = db = create_database_engine(self.url)
        migrate(db)
        seed_hard_world(db, self.world, self.settings, questions, traffic_seed)
        return self._run(db, budget)

    def warm(self, questions: Questions, budget: int, traffic_seed: int) -> Outcome:
        if self.db is None:
            raise RuntimeError("a warm run needs the store of a cold run")
        store_traffic(self.db, self.world, self.settings, questions, traffic_seed)
        return self._run(self.db, budget)

    def _run(self, db: Engine, budget: int) -> Outcome:
        settings = self.settings.model_copy(update={"run_max_metric_calls": budget})
        run = OptimizationRun(db, settings, HARD_SPEC, seed=self.seed)
        report = run_with_models(run.execute())
        best = candidates_of(db, HARD_SPEC.name)[report.best_version].components
        notes = {
            key: getattr(report, key, None)
            for key in ("stop_reason", "iterations", "new_versions", "proposed", "frontier")
        }
        notes["best_version"] = report.best_version
        return Outcome(report.metric_calls, dict(best), notes)

    def close(self) -> None:
        if self.db is not None:
            self.db.dispose()


def _evaluate_all(
    judge: Judge, batch: list[dict[str, str]], candidate: dict[str, str]
) -> list[tuple[str, float, str]]:
    """(output, score, feedback) per item: the task replayed and judged, as our engine does."""
    gateway = judge.gateway

    async def one(item: dict[str, str]) -> tuple[str, float, str]:
        inputs = {"user_message": item["question"]}
        messages = render_task(HARD_SPEC.task, candidate, inputs)
        completion = await gateway.complete("task", messages)
        verdict = await judge.score(inputs, completion.text)
        return completion.text, verdict.score, verdict.feedback

    async def run_all() -> list[tuple[str, float, str]]:
        return list(await asyncio.gather(*(one(item) for item in batch)))

    return run_with_models(run_all())


class WorldAdapter:
    """gepa's adapter for the hard world: evaluate a candidate on a batch of questions, and the
    reflective dataset its default proposer renders into its default template."""

    propose_new_texts = None

    def __init__(self, settings: Any) -> None:
        self.judge = judge_for(Gateway(settings), HARD_SPEC)

    def evaluate(
        self, batch: list[dict[str, str]], candidate: dict[str, str], capture_traces: bool = False
    ) -> Any:
        from gepa.core.adapter import EvaluationBatch

        results = _evaluate_all(self.judge, batch, candidate)
        traces = [
            {"question": item["question"], "output": output, "feedback": feedback}
            for item, (output, _, feedback) in zip(batch, results, strict=True)
        ]
        return EvaluationBatch(
            outputs=[output for output, _, _ in results],
            scores=[score for _, score, _ in results],
            trajectories=traces if capture_traces else None,
        )

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> dict[str, list[dict[str, str]]]:
        records = [
            {"Inputs": t["question"], "Generated Outputs": t["output"], "Feedback": t["feedback"]}
            for t in eval_batch.trajectories
        ]
        return {name: records for name in components_to_update}


class _Quiet:
    def log(self, message: str) -> None:
        pass


def gepa_run(api_base: str, questions: Questions, budget: int, seed: int) -> Outcome:
    """The `gepa` library on the same events (shuffled, half to learn from, half to validate on,
    as our engine splits its window), reflecting through the same server."""
    import gepa

    litellm = load_litellm()
    items = [{"question": question, "segment": segment} for segment, question in questions]
    random.Random(seed).shuffle(items)
    half = len(items) // 2

    def reflection_lm(prompt: Any) -> str:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        response = litellm.completion(
            model="openai/local", api_base=api_base, api_key="unused", messages=messages
        )
        return str(response.choices[0].message.content)

    result = gepa.optimize(
        seed_candidate=dict(HARD_SEED),
        trainset=items[:half],
        valset=items[half:],
        adapter=WorldAdapter(hard_settings(api_base)),
        reflection_lm=reflection_lm,
        max_metric_calls=budget,
        reflection_minibatch_size=3,
        use_merge=True,
        seed=seed,
        logger=_Quiet(),
        display_progress_bar=False,
    )
    best = result.best_candidate
    components = best if isinstance(best, dict) else {"system_prompt": str(best)}
    notes = {"candidates": len(result.candidates), "best_idx": result.best_idx}
    return Outcome(int(result.total_metric_calls or 0), dict(components), notes)
