"""A small world with a hidden optimum for optimizer tests: the test server's task model follows
its system prompt literally, its judge rewards a next step, courtesy and answering the question,
and its reflection model fixes what the feedback names. The seed scores 0; 1.0 is reachable."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, select

from sidecar.events import ConsumedEvent
from sidecar.judge.judge import judge_for
from sidecar.llm.gateway import Gateway
from sidecar.settings import JudgeBlock, PromptSpec, load_settings
from sidecar.store.judgments import JudgmentRecord, store_judgments
from sidecar.store.repository import seed_prompt, store_events, transaction
from sidecar.store.tables import Event
from tests.helpers import consumed
from tests.llm_server import LlmServer, rule_score, task_reply

ROLES = ("judge", "task", "reflection")

SEED = "You are a helpful customer care assistant."
RUBRIC = "Score 1.0 when the reply names the next step, thanks the customer and answers them."
SPEC = PromptSpec(
    name="customer-care",
    seed={"system_prompt": SEED},
    task={
        "messages": [
            {"role": "system", "content": "{system_prompt}"},
            {"role": "user", "content": "{user_message}"},
        ]
    },
    judge=JudgeBlock(rubric=RUBRIC),
)

# the same world with a second component, which the task template appends to the system prompt
TWO_PART = SPEC.model_copy(
    update={
        "seed": {"system_prompt": SEED, "closing": "Be brief."},
        "task": {
            "messages": [
                {"role": "system", "content": "{system_prompt} {closing}"},
                {"role": "user", "content": "{user_message}"},
            ]
        },
    }
)

QUESTIONS = ["Where is my order?", "Why was I charged twice?", "How do I return a jacket?"]


def world_settings(api_base: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        **{f"{role}_model": "openai/local" for role in ROLES},
        **{f"{role}_api_base": api_base for role in ROLES},
        "llm_backoff_base_s": 0.01,
        "run_max_metric_calls": 200,
        "optimize_patience": 6,
        **overrides,
    }
    return load_settings(**values)


def live_traffic(
    engine: Engine,
    server: LlmServer,
    n: int,
    seed: int = 1,
    questions: Sequence[str] = QUESTIONS,
    answer: Callable[[str], str] = lambda question: task_reply(SEED, question),
) -> None:
    """n events of `questions` in turn, answered in production by `answer` (by default the seed
    prompt through the task rule), judged as the judge workers would have."""
    now = datetime.now(UTC)
    rng = random.Random(seed)
    events = []
    for index, item in enumerate(consumed(rng, n, first_offset=seed * 1000)):
        question = questions[index % len(questions)]
        event = item.event.model_copy(
            update={"inputs": {"user_message": question}, "output": answer(question)}
        )
        events.append(ConsumedEvent(event, item.partition, item.offset))
    store_events(engine, events, {}, now)
    version = judge_for(Gateway(world_settings(server.api_base)), SPEC).version
    with transaction(engine) as connection:
        rows = connection.execute(select(Event.id, Event.inputs, Event.output)).all()
    records = []
    for row_id, inputs, output in rows:
        score, feedback = rule_score(inputs["user_message"], output)
        records.append(
            JudgmentRecord(row_id, "customer-care", 1, version, score=score, feedback=feedback)
        )
    store_judgments(engine, records, now)


def world_environment(server: LlmServer, directory: Path) -> dict[str, str]:
    """SIDECAR_* variables for a CLI subprocess in this world (config file written to disk)."""
    config = directory / "prompts.yaml"
    config.write_text(yaml.safe_dump({"prompts": [SPEC.model_dump(exclude_none=True)]}))
    env = {f"SIDECAR_{role.upper()}_MODEL": "openai/local" for role in ROLES}
    env.update({f"SIDECAR_{role.upper()}_API_BASE": server.api_base for role in ROLES})
    env.update(SIDECAR_CONFIG_FILE=str(config), SIDECAR_RUN_MAX_METRIC_CALLS="200")
    env.update(SIDECAR_OPTIMIZE_PATIENCE="6", SIDECAR_LLM_BACKOFF_BASE_S="0.01")
    return env


def seed_world(engine: Engine, server: LlmServer, events: int) -> Engine:
    """A migrated database as a running sidecar leaves it: the seed active, `events` judged."""
    seed_prompt(engine, "customer-care", {"system_prompt": SEED}, datetime.now(UTC))
    live_traffic(engine, server, events)
    return engine
