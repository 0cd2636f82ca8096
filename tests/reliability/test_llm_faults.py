"""R4: the model provider fails 30% of calls (429 with and without Retry-After, 500, hangs past
the timeout, non-JSON replies), from our deterministic server through litellm. Every event is
judged eventually; a GEPA run and a shadow pass end within their budgets; and no candidate is
proposed, or gated, on fewer evaluations than its evidence claims, nor on partial evidence
without the evidence saying so."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from sidecar.events import ConsumedEvent
from sidecar.judge.worker import JudgeWorker
from sidecar.llm.gateway import Gateway
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.optimize.engine import OptimizationRun, RunReport
from sidecar.settings import PromptsConfig
from sidecar.shadow.runner import ShadowPass, ShadowReport
from sidecar.simulated.server import FAULT_KINDS
from sidecar.store.candidates import (
    cached_evaluations,
    candidates_of,
    insert_candidate,
    mark_proposed,
)
from sidecar.store.judgments import judgments_for
from sidecar.store.repository import seed_prompt, store_events, transaction
from sidecar.store.tables import Event, MutationAttempt
from sidecar.store.tables import OptimizationRun as RunRow
from tests.helpers import consumed, wait_until
from tests.llm_server import LlmServer, task_reply
from tests.reliability.rows import Row, record, sized
from tests.world import QUESTIONS, SEED, SPEC, world_settings

FAULT_RATE = 0.3
BETTER = f"{SEED} Always end by naming the next step."
BUDGET_LIMITS = ("metric_calls", "usd", "wall_time")


def traffic(engine: Engine, n: int, seed: int) -> list[int]:
    """n unjudged events answered by the seed prompt, as ingest stores them; their row ids."""
    rng = random.Random(seed)
    events = [
        ConsumedEvent(
            item.event.model_copy(
                update={
                    "inputs": {"user_message": QUESTIONS[i % len(QUESTIONS)]},
                    "output": task_reply(SEED, QUESTIONS[i % len(QUESTIONS)]),
                }
            ),
            item.partition,
            item.offset,
        )
        for i, item in enumerate(consumed(rng, n, first_offset=seed * 100_000))
    ]
    before = set(row_ids(engine))
    store_events(engine, events, {}, datetime.now(UTC))
    return [row for row in row_ids(engine) if row not in before]


def row_ids(engine: Engine) -> list[int]:
    with transaction(engine) as connection:
        return list(connection.execute(select(Event.id).order_by(Event.id)).scalars())


def judged_ok(engine: Engine) -> int:
    return sum(1 for j in judgments_for(engine) if j.status == "ok")


def judge_everything(engine: Engine, settings: Any, n: int) -> int:
    """Judge workers under faults until every event has an `ok` judgment; the judgments that
    failed at least once (kept as `judge_error` and retried)."""
    metrics = Metrics([SPEC.name])
    config = PromptsConfig(prompts=[SPEC])
    worker = JudgeWorker(engine, Gateway(settings, metrics), config, metrics).start()
    try:
        wait_until(lambda: judged_ok(engine) == n, 60 + n, f"{n} events judged")
    finally:
        assert worker.stop()
    assert worker.failed is None
    return sum(1 for j in judgments_for(engine) if j.attempts > 1)


def paired_in_store(
    run_key: tuple[str, str], engine: Engine, ids: list[int], a: int, b: int
) -> int:
    """Events on which the store holds an evaluation of both candidate ids: what a claim of n
    paired evaluations must not exceed."""
    cached = cached_evaluations(engine, [a, b], ids, run_key)
    return len({e for c, e in cached if c == a} & {e for c, e in cached if c == b})


def check_run(
    engine: Engine, run: OptimizationRun, report: RunReport, ids: list[int], problems: list[str]
) -> int:
    """Every version with evidence: proposed only on the whole Pareto set, backed by the store;
    partial evidence says so (what is not, goes to `problems`). The partially scored versions."""
    everyone = candidates_of(engine, SPEC.name)
    champion = everyone[report.champion_version]
    assert champion.id is not None
    partial = 0
    for version, candidate in everyone.items():
        evidence = candidate.evidence or {}
        if evidence.get("run_id") != run.run_id:
            continue
        assert candidate.id is not None
        stored = paired_in_store(run.evaluator.key, engine, ids, candidate.id, champion.id)
        if evidence["pareto_scored"] > stored:
            problems.append(f"v{version} claims {evidence['pareto_scored']} pairs, {stored} stored")
        said = "partial evidence" in evidence["verdict"] or "not scored" in evidence["verdict"]
        if evidence["partial"]:
            partial += 1
            if not said or version in report.proposed:
                problems.append(f"v{version} partial: {evidence['verdict']}")
        full = evidence["pareto_scored"] == evidence["pareto_size"] == report.pareto_size
        if version in report.proposed and not (full and candidate.status == "proposed"):
            problems.append(f"v{version} proposed on {evidence}")
    return partial


def check_attempts(engine: Engine, report: RunReport, problems: list[str]) -> int:
    """A child left unscored says why: a spent budget only when the run ran out of one, else
    the failed evaluations. How many children failed evaluations cost."""
    with transaction(engine) as connection:
        summaries = connection.execute(
            select(MutationAttempt.summary).where(MutationAttempt.run_id == report.run_id)
        ).scalars()
        unscored = [text for text in summaries if "(not scored:" in text]
    budget_cut = report.stop_reason in BUDGET_LIMITS
    for summary in unscored:
        if "budget spent" in summary and not budget_cut:
            problems.append(f"run stopped by {report.stop_reason}, attempt says: {summary}")
    return sum(1 for summary in unscored if "evaluations failed" in summary)


def check_shadow(
    engine: Engine, shadow: ShadowPass, report: ShadowReport, ids: list[int], problems: list[str]
) -> int:
    """Each decided or waiting candidate: its pairs are in the store, the unpaired are counted,
    and a gate decision on fewer than all fresh events says so. The unpaired events."""
    everyone = candidates_of(engine, SPEC.name)
    champion = everyone[report.champion_version or 0]
    assert champion.id is not None
    unpaired = 0
    for outcome in report.candidates:
        candidate = everyone[outcome.version]
        assert candidate.id is not None
        figures = (candidate.evidence or {})["shadow"]
        stored = paired_in_store(shadow.evaluator.key, engine, ids, candidate.id, champion.id)
        counted = figures.get("events", 0) - figures.get("unpaired", 0)
        if not figures["n"] == outcome.pairs == counted <= stored:
            problems.append(
                f"v{outcome.version}: {outcome.pairs} pairs, {stored} stored, {figures}"
            )
        unpaired += figures.get("unpaired", 0)
        said = f"decided on {outcome.pairs} of {figures.get('events')}" in outcome.reason
        if figures.get("unpaired") and outcome.decision != "wait" and not said:
            problems.append(f"v{outcome.version} gated on partial pairs: {outcome.reason}")
        if outcome.decision == "pass" and outcome.pairs < shadow.settings.shadow_min_pairs:
            problems.append(f"v{outcome.version} passed on {outcome.pairs} pairs")
    return unpaired


def fault_settings(server: LlmServer, run_calls: int, shadow_calls: int, fresh: int) -> Any:
    """Short timeouts and waits, so the faults cost seconds; budgets for the run and the pass."""
    return world_settings(
        server.api_base,
        llm_timeout_s=0.5,
        llm_backoff_cap_s=0.05,
        judge_retry_after_s=0.05,
        judge_poll_interval_s=0.05,
        judge_concurrency=8,
        llm_max_retries=1,  # retries are spent often enough to leave evidence partial
        run_max_metric_calls=run_calls,
        optimize_patience=sized(ci=4, full=10),  # a failed reflection is no progress either
        shadow_max_metric_calls=shadow_calls,
        shadow_min_pairs=10,
        shadow_max_pairs=fresh,
    )


def test_llm_faults_at_thirty_percent(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> None:
    n = sized(ci=30, full=1000)
    fresh = sized(ci=20, full=200)
    run_calls, shadow_calls = sized(ci=80, full=400), sized(ci=60, full=500)
    engine = migrated_engine(sqlite_url)
    seed_prompt(engine, SPEC.name, {"system_prompt": SEED}, datetime.now(UTC))
    history = traffic(engine, n, seed=1)
    llm_server.fault_rate, llm_server.hang_s, llm_server.retry_after = FAULT_RATE, 2.0, "0.05"
    settings = fault_settings(llm_server, run_calls, shadow_calls, fresh)
    # no gateway retries for the judge workers: a failed call becomes a judge_error at once,
    # which the workers must come back to
    retried = judge_everything(engine, settings.model_copy(update={"llm_max_retries": 0}), n)

    run = OptimizationRun(engine, settings, SPEC, seed=4)
    report = run_with_models(run.execute())
    with transaction(engine) as connection:
        [row] = [RunRow.model_validate(r._mapping) for r in connection.execute(select(RunRow))]
    assert (row.status, row.metric_calls) == ("finished", report.metric_calls)
    assert report.metric_calls <= run_calls
    problems: list[str] = []
    partial = check_run(engine, run, report, history, problems)
    unscored = check_attempts(engine, report, problems)

    now = datetime.now(UTC)
    better = insert_candidate(engine, SPEC.name, {"system_prompt": BETTER}, [1], None, "", [], now)
    mark_proposed(engine, SPEC.name, [better.version], "a known improvement", now)
    ids = traffic(engine, fresh, seed=2)
    shadow = ShadowPass(engine, settings, SPEC, Metrics([SPEC.name]))
    shadowed = run_with_models(shadow.execute())
    assert shadowed.metric_calls <= shadow_calls
    assert better.version in {o.version for o in shadowed.candidates}
    unpaired = check_shadow(engine, shadow, shadowed, ids, problems)

    faults = {kind: llm_server.requests[kind] for kind in FAULT_KINDS}
    ok = judged_ok(engine)
    passed = all(faults.values()) and retried > 0 and ok == n and not problems
    measured = (
        f"{ok}/{n} judged ({retried} after a judge_error retry); run {row.status} by "
        f"{report.stop_reason} after {report.metric_calls} metric calls, proposed "
        f"{report.proposed or 'none'}, {partial} versions with partial evidence, {unscored} "
        "children unscored for failed evaluations; shadow "
        f"{shadowed.metric_calls} calls: "
        + ", ".join(f"v{o.version} {o.decision} on {o.pairs} pairs" for o in shadowed.candidates)
        + f", {unpaired} unpaired events counted; {len(problems)} claims beyond the evidence"
    )
    record(
        Row(
            row="R4",
            test="tests/reliability/test_llm_faults.py::test_llm_faults_at_thirty_percent",
            load=(
                f"{n} events judged, a GEPA run (budget {run_calls} metric calls), a shadow "
                f"pass on {fresh} fresh events (budget {shadow_calls}); "
                f"{sum(llm_server.requests.values())} model requests"
            ),
            faults=f"{FAULT_RATE:.0%} of requests: "
            + ", ".join(f"{kind} x{count}" for kind, count in faults.items()),
            goal="every event judged; run and pass end within budget; no claim beyond evidence",
            result=measured,
            passed=passed,
            lost=n - ok,
            duplicated=len(judgments_for(engine)) - n,
        )
    )
    assert not problems, problems
    assert all(faults.values()), faults
    assert retried > 0  # some judgments failed and were judged on a later round
