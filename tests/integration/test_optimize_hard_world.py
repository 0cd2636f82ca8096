"""The optimizer in the hard world (tests/hard_world.py): a noisy judge, two components,
segment facts that help one segment and hurt the others, distractor feedback, traffic whose mix
shifts between runs. A CI-sized slice of bench/optimize_parity.py: no run crashes, an unchanged
reply is never judged twice, warm runs on shifted traffic start from what the last one found."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select

from sidecar.llm.loop_clients import run_with_models
from sidecar.optimize.budget import Budget
from sidecar.optimize.engine import OptimizationRun
from sidecar.store.candidates import candidates_of
from sidecar.store.repository import transaction
from sidecar.store.tables import Evaluation
from tests.hard_traffic import hard_settings, seed_hard_world, store_traffic, traffic_questions
from tests.hard_world import FIRST_MIX, HARD_SPEC, SHIFTED_MIX, HardWorld, hidden_score
from tests.llm_server import LlmServer


def judge_calls(server: LlmServer) -> int:
    return sum(1 for body in server.bodies if "<output>" in body["messages"][-1]["content"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_runs_climb_and_warm_runs_on_shifted_traffic_keep_what_was_found(
    seed: int, sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine = migrated_engine(sqlite_url)
    with LlmServer(world=HardWorld(seed=seed)) as server:
        settings = hard_settings(server.api_base, optimize_patience=10)
        seed_hard_world(
            engine, server.world, settings, traffic_questions(48, FIRST_MIX, seed), seed
        )
        budget = Budget(max_metric_calls=200, max_usd=1.0, max_seconds=600, patience=10)
        judged_before = judge_calls(server)
        cold = run_with_models(OptimizationRun(engine, settings, HARD_SPEC, budget, seed).execute())
        judged = judge_calls(server) - judged_before
        store_traffic(
            engine,
            server.world,
            settings,
            traffic_questions(40, SHIFTED_MIX, seed + 100),
            seed + 100,
        )
        warm = run_with_models(OptimizationRun(engine, settings, HARD_SPEC, budget, seed).execute())
    versions = candidates_of(engine, HARD_SPEC.name)
    best = hidden_score(versions[cold.best_version].components)
    assert best > hidden_score(versions[1].components) + 0.3
    assert cold.proposed
    # the warm run proposes what it found, unless what it found is the cold run's proposal
    # (only a version still in the pool can become `proposed`)
    assert warm.proposed or versions[warm.best_version].status == "proposed"
    # the warm run starts from the frontier the cold one left (it replays the cold run's best on
    # the new events) and ends no worse on held-out questions, give or take the judge's noise
    with transaction(engine) as connection:
        replayed = connection.execute(
            select(Evaluation.id).where(
                Evaluation.candidate_id == versions[cold.best_version].id,
                Evaluation.run_id == warm.run_id,
            )
        ).all()
    assert replayed
    assert hidden_score(versions[warm.best_version].components) >= best - 0.15
    # an output already judged on an event is never judged again: it keeps one verdict
    with transaction(engine) as connection:
        rows = connection.execute(
            select(Evaluation.event_row_id, Evaluation.output, Evaluation.score)
        ).all()
    verdicts: dict[tuple[int, str], set[float]] = defaultdict(set)
    for event, output, score in rows:
        verdicts[(event, output)].add(score)
    assert all(len(scores) == 1 for scores in verdicts.values())
    assert judged < cold.metric_calls  # the same reply on the same event: no judge call
