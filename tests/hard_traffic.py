"""Traffic for the hard world (tests/hard_world.py): questions drawn by a segment mix,
answered by the seed prompt and judged by the world's noisy judge, stored as the sidecar's
consumer and judge workers would have; and settings that point every role at its server."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from sidecar.events import ConsumedEvent
from sidecar.judge.judge import judge_for
from sidecar.llm.gateway import Gateway
from sidecar.store.judgments import JudgmentRecord, store_judgments
from sidecar.store.repository import seed_prompt, store_events, transaction
from sidecar.store.tables import Event
from tests.hard_world import (
    BY_NAME,
    HARD_SEED,
    HARD_SPEC,
    PLANTED_MESSAGE,
    HardWorld,
    render_system,
    task_reply,
)
from tests.helpers import consumed
from tests.world import world_settings


def hard_settings(api_base: str, **overrides: Any) -> Any:
    """Settings with every role on the world server at `api_base` (as `world_settings`)."""
    return world_settings(api_base, **overrides)


def traffic_questions(
    n: int, mix: Mapping[str, float], seed: int, planted: bool = False
) -> list[tuple[str, str]]:
    """n (segment, question) pairs drawn by the segment weights in `mix`; with `planted`, one of
    them is PLANTED_MESSAGE (a billing question carrying an instruction)."""
    rng = random.Random(seed)
    names = sorted(mix)
    items = []
    for _ in range(n):
        name = rng.choices(names, [mix[name] for name in names])[0]
        items.append((name, rng.choice(BY_NAME[name].traffic)))
    if planted:
        items[rng.randrange(n)] = ("billing", PLANTED_MESSAGE)
    return items


def store_traffic(
    engine: Engine,
    world: HardWorld,
    settings: Any,
    questions: Sequence[tuple[str, str]],
    seed: int,
) -> None:
    """Events answered by the seed prompt through the task rule and judged by `world`'s judge,
    stored as the sidecar's consumer and judge workers would have (noisy live judgments)."""
    now = datetime.now(UTC)
    system = render_system(HARD_SEED)
    events = []
    items = consumed(random.Random(seed), len(questions), first_offset=seed * 10_000)
    for (segment, question), item in zip(questions, items, strict=True):
        update = {
            "inputs": {"user_message": question},
            "output": task_reply(system, question),
            "metadata": {"segment": segment},
        }
        events.append(
            ConsumedEvent(item.event.model_copy(update=update), item.partition, item.offset)
        )
    store_events(engine, events, {}, now)
    version = judge_for(Gateway(settings), HARD_SPEC).version
    ids = [str(item.event.event_id) for item in events]
    columns = Event.__table__.c  # type: ignore[attr-defined]
    query = select(columns.id, columns.inputs, columns.output).where(columns.event_id.in_(ids))
    with transaction(engine) as connection:
        rows = connection.execute(query).all()
    records = [
        JudgmentRecord(
            row_id, HARD_SPEC.name, 1, version, *world.judge(inputs["user_message"], output)
        )
        for row_id, inputs, output in rows
    ]
    store_judgments(engine, records, now)


def seed_hard_world(
    engine: Engine, world: HardWorld, settings: Any, questions: Sequence[tuple[str, str]], seed: int
) -> None:
    """A migrated database as a running sidecar leaves it: the seed active, `questions` judged."""
    seed_prompt(engine, HARD_SPEC.name, dict(HARD_SEED), datetime.now(UTC))
    store_traffic(engine, world, settings, questions, seed)
