"""GEPA runs end to end on a small world with a hidden optimum: the test server's task model
follows its system prompt literally, its judge rewards a next step, courtesy and answering the
question, and its reflection model fixes what the feedback names. Real litellm, real databases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from sidecar.llm.loop_clients import run_with_models
from sidecar.optimize.budget import Budget
from sidecar.optimize.engine import NotEnoughTraffic, OptimizationRun
from sidecar.store.candidates import candidates_of, finish_run, insert_candidate, start_run
from sidecar.store.repository import seed_prompt, transaction
from sidecar.store.tables import AuditEntry, Evaluation, MutationAttempt
from sidecar.store.tables import OptimizationRun as RunRow
from tests.llm_server import LlmServer
from tests.world import QUESTIONS, SEED, SPEC, TWO_PART, live_traffic, seed_world, world_settings


@pytest.fixture
def world(
    database_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> Engine:
    return seed_world(migrated_engine(database_url), llm_server, 24)


def rows(engine: Engine, table: Any) -> list[Any]:
    with transaction(engine) as connection:
        return [table.model_validate(row._mapping) for row in connection.execute(select(table))]


def test_a_run_climbs_from_the_seed_and_proposes_what_beats_it(
    world: Engine, llm_server: LlmServer
) -> None:
    settings = world_settings(llm_server.api_base)
    report = run_with_models(OptimizationRun(world, settings, SPEC, seed=3).execute())
    assert report.champion_version == 1
    assert report.champion_score == 0.0  # the seed never names a next step nor thanks anyone
    assert report.best_score == 1.0
    assert report.stop_reason == "perfect_on_pareto"
    assert report.proposed and report.best_version in report.proposed
    assert report.metric_calls <= 200
    versions = candidates_of(world, "customer-care")
    best = versions[report.best_version]
    assert best.status == "proposed"
    assert best.evidence is not None
    assert (best.evidence["pareto_mean"], best.evidence["champion_mean"]) == (1.0, 0.0)
    assert best.evidence["pareto_scored"] == best.evidence["pareto_size"] == report.pareto_size
    assert best.evidence["run_id"] == report.run_id
    text = best.components["system_prompt"].lower()
    assert "next step" in text and "thank" in text and "question" in text
    # lineage: every new version descends from versions that exist, back to the seed
    for version in report.new_versions:
        assert versions[version].parents and all(p in versions for p in versions[version].parents)
        assert versions[version].origin_run_id == report.run_id
        assert versions[version].mutation_summary
    attempts = rows(world, MutationAttempt)
    assert {a.outcome for a in attempts} >= {"accepted"}
    assert all(a.run_id == report.run_id for a in attempts)
    audit = [(a.version, a.to_status) for a in rows(world, AuditEntry)]
    assert (report.best_version, "proposed") in audit
    [run] = rows(world, RunRow)
    assert (run.status, run.metric_calls) == ("finished", report.metric_calls)
    assert run.frontier == report.frontier
    # the champion was replayed and judged like every other version, on the whole Pareto set
    champion = versions[1]
    replays = [e for e in rows(world, Evaluation) if e.candidate_id == champion.id]
    assert len(replays) >= report.pareto_size
    assert all(e.run_id == report.run_id for e in replays)


def test_a_warm_run_reuses_the_frontier_and_the_cache(world: Engine, llm_server: LlmServer) -> None:
    settings = world_settings(llm_server.api_base, optimize_patience=2)
    cold = run_with_models(OptimizationRun(world, settings, SPEC, seed=3).execute())
    assert cold.stop_reason == "perfect_on_pareto"
    calls_before = sum(llm_server.requests.values())
    warm = run_with_models(OptimizationRun(world, settings, SPEC, seed=3).execute())
    # the same traffic again: the frontier comes back from the store with its evaluations
    # cached, the best is already perfect, so the warm run pays for nothing at all
    assert (warm.metric_calls, warm.stop_reason) == (0, "perfect_on_pareto")
    assert sum(llm_server.requests.values()) == calls_before
    assert warm.best_version == cold.best_version and warm.best_score == 1.0
    assert warm.new_versions == []


def test_the_budget_is_a_hard_cap(world: Engine, llm_server: LlmServer) -> None:
    settings = world_settings(llm_server.api_base)
    # 25 calls: a Pareto set of 2 events (its smallest); the champion's 2 replays,
    # then per fix 3 + 3 minibatch calls and 2 on the Pareto set; the third fix runs out there
    budget = Budget(max_metric_calls=25, max_usd=1.0, max_seconds=60, patience=50)
    report = run_with_models(
        OptimizationRun(world, settings, SPEC, budget=budget, seed=1).execute()
    )
    assert (report.metric_calls, report.stop_reason, report.pareto_size) == (25, "metric_calls", 2)
    task_calls = sum(
        1 for body in llm_server.bodies if body["messages"][-1]["content"] in QUESTIONS
    )
    assert task_calls == 25
    # the last child won its minibatch, then the budget ran out while scoring it on the Pareto
    # set: it is kept, says on how much of the set it was scored, and is not proposed
    _, second, last = report.new_versions
    assert report.partial == {last: "scored on 1 of 2"}
    assert report.proposed == [second]
    candidate = candidates_of(world, "customer-care")[last]
    assert candidate.status == "pool" and candidate.evidence is not None
    assert (candidate.evidence["pareto_scored"], candidate.evidence["pareto_size"]) == (1, 2)
    assert candidate.evidence["partial"] is True
    assert "partial evidence: scored on 1 of 2" in candidate.evidence["verdict"]


def test_too_little_judged_traffic_is_a_clear_error(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> None:
    engine = migrated_engine(sqlite_url)
    seed_prompt(engine, "customer-care", {"system_prompt": SEED}, datetime.now(UTC))
    with pytest.raises(NotEnoughTraffic, match="0 judged events"):
        run_with_models(
            OptimizationRun(engine, world_settings(llm_server.api_base), SPEC).execute()
        )


def test_a_run_left_running_by_a_killed_process_is_marked_failed(
    sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine = migrated_engine(sqlite_url)
    now = datetime.now(UTC)
    first = start_run(engine, "customer-care", {}, now - timedelta(minutes=5))
    second = start_run(engine, "customer-care", {}, now)
    runs = {run.id: run for run in rows(engine, RunRow)}
    assert runs[first].status == "failed" and "interrupted" in (runs[first].error or "")
    assert runs[second].status == "running"


def test_usd_across_task_judge_and_reflection_is_a_hard_cap(
    world: Engine, llm_server: LlmServer
) -> None:
    # the live traffic was judged by the unpriced local judge; task and reflection are priced
    priced = {f"{role}_model": "openai/gpt-4o-mini" for role in ("task", "reflection")}
    settings = world_settings(llm_server.api_base, **priced, run_budget_usd=0.0004)
    budget = Budget(max_metric_calls=1000, max_usd=0.0004, max_seconds=60, patience=50)
    run = OptimizationRun(world, settings, SPEC, budget=budget, seed=2)
    report = run_with_models(run.execute())
    assert report.stop_reason == "usd"
    assert 0 < report.cost_usd <= 0.0004
    spend = run.gateway.ledger.snapshot()
    assert spend["task"].cost_usd > 0 and spend["reflection"].cost_usd > 0
    assert report.cost_usd == pytest.approx(sum(s.cost_usd for s in spend.values()))


def test_equally_good_edits_of_different_components_are_merged(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> None:
    engine = migrated_engine(sqlite_url)
    now = datetime.now(UTC)
    seed_prompt(engine, "customer-care", dict(TWO_PART.seed), now)
    live_traffic(engine, llm_server, 24)
    thanks = {"system_prompt": f"{SEED} Thank the customer warmly.", "closing": "Be brief."}
    answers = {"system_prompt": SEED, "closing": "Answer the customer's exact question."}
    insert_candidate(engine, "customer-care", thanks, [1], None, "thank them", [], now)
    insert_candidate(engine, "customer-care", answers, [1], None, "answer them", [], now)
    earlier = start_run(engine, "customer-care", {}, now)  # the frontier a past run left
    finish_run(engine, earlier, "finished", 0, 0.0, [2, 3], now)
    settings = world_settings(llm_server.api_base, optimize_merge_every=1, optimize_patience=2)
    report = run_with_models(OptimizationRun(engine, settings, TWO_PART, seed=1).execute())
    versions = candidates_of(engine, "customer-care")
    [merged] = [c for c in versions.values() if sorted(c.parents) == [2, 3]]
    assert merged.components == {
        "system_prompt": thanks["system_prompt"],
        "closing": answers["closing"],
    }
    assert merged.mutation_summary == "merged v2 and v3 (common ancestor v1)"
    assert merged.version in report.new_versions
    assert report.best_score >= 0.5  # each edit alone scores 0.25
