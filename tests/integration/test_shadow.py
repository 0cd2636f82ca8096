"""Shadow passes end to end on the test server's small world: its task model follows the system
prompt literally and its judge rewards a next step (0.5), courtesy (0.25) and answering the
question (0.25), so a candidate's text decides how it compares with the champion. Real litellm,
real SQLite files and PostgreSQL; the traffic is stored as ingest stores it, mostly unjudged."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from sidecar.events import ConsumedEvent
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import PREFIX, Metrics
from sidecar.shadow.gate import GateDecision
from sidecar.shadow.runner import ShadowPass, ShadowReport
from sidecar.store.candidates import candidates_of, insert_candidate, mark_proposed, set_evidence
from sidecar.store.database import aware
from sidecar.store.promotions import audit_trail, reject
from sidecar.store.repository import seed_prompt, store_events, transaction
from sidecar.store.tables import Candidate, Comparison, Evaluation, Event
from tests.helpers import consumed
from tests.llm_server import LlmServer
from tests.world import QUESTIONS, SEED, SPEC, live_traffic, seed_world, world_settings

NAME = SPEC.name
NEXT_STEP = f"{SEED} Always end by naming the next step."  # 0.5 on every question
ANSWERS = f"{NEXT_STEP} Answer the customer's exact question."  # 0.75, echoing the question


@pytest.fixture
def world(
    database_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> Engine:
    """The seed (scores 0) active, and 6 judged events that come before any candidate."""
    return seed_world(migrated_engine(database_url), llm_server, 6)


@pytest.fixture
def sqlite_world(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> Engine:
    return seed_world(migrated_engine(sqlite_url), llm_server, 6)


def propose(engine: Engine, text: str, pareto_mean: float | None = None) -> int:
    """A new `proposed` version with `text` as its system prompt, as an optimizer run leaves it."""
    now = datetime.now(UTC)
    version = insert_candidate(engine, NAME, {"system_prompt": text}, [1], None, "edit", [], now)
    mark_proposed(engine, NAME, [version.version], "beat the champion", now)
    if pareto_mean is not None:
        set_evidence(engine, NAME, version.version, {"pareto_mean": pareto_mean})
    return version.version


def traffic(
    engine: Engine,
    questions: Sequence[str],
    seed: int,
    segments: Sequence[str | None] | None = None,
) -> list[int]:
    """Unjudged events asking `questions` (with `segments` as metadata.segment); their row ids."""
    events = []
    for index, item in enumerate(consumed(random.Random(seed), len(questions), seed * 1000)):
        segment = segments[index] if segments else None
        event = item.event.model_copy(
            update={
                "inputs": {"user_message": questions[index]},
                "metadata": {"segment": segment} if segment else None,
            }
        )
        events.append(ConsumedEvent(event, item.partition, item.offset))
    store_events(engine, events, {}, datetime.now(UTC))
    ids = [str(item.event.event_id) for item in events]
    query = select(Event.id).where(Event.event_id.in_(ids))  # type: ignore[attr-defined]
    with transaction(engine) as connection:
        return sorted(connection.execute(query).scalars())


def questions(n: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]


def run_pass(
    engine: Engine,
    server: LlmServer,
    metrics: Metrics | None = None,
    clock: Callable[[], datetime] | None = None,
    **settings: Any,
) -> ShadowReport:
    values = {"shadow_min_pairs": 10, **settings}
    shadow = ShadowPass(
        engine, world_settings(server.api_base, **values), SPEC, metrics, **_clock(clock)
    )
    return run_with_models(shadow.execute())


def _clock(clock: Callable[[], datetime] | None) -> dict[str, Any]:
    return {} if clock is None else {"clock": clock}


def version(engine: Engine, number: int) -> Candidate:
    return candidates_of(engine, NAME)[number]


def replayed_on(engine: Engine, number: int) -> list[int]:
    """The event row ids a version was replayed (and judged) on."""
    row = version(engine, number)
    query = select(Evaluation.event_row_id).where(Evaluation.candidate_id == row.id)
    with transaction(engine) as connection:
        return sorted(connection.execute(query).scalars())


def event_ids(engine: Engine) -> list[int]:
    with transaction(engine) as connection:
        return list(connection.execute(select(Event.id)).scalars())


def gauge(metrics: Metrics, name: str, number: int) -> float | None:
    labels = {"prompt": NAME, "version": str(number)}
    return metrics.registry.get_sample_value(PREFIX + name, labels)


# --- the gate's three outcomes ------------------------------------------------------------------


def test_a_better_candidate_passes_on_replays_of_fresh_traffic_only(
    world: Engine, llm_server: LlmServer
) -> None:
    before = set(event_ids(world))  # judged, but received before the candidate existed
    better = propose(world, NEXT_STEP, pareto_mean=0.5)

    # production answered these well and its live judge said so (1.0); a replay of the
    # champion scores 0: the candidate is compared with the replay, never with production
    def production(question: str) -> str:
        return f"Thank you. About '{question}': next step, a refund."

    live_traffic(world, llm_server, 12, seed=2, answer=production)
    fresh = sorted(set(event_ids(world)) - before)
    report = run_pass(world, llm_server)

    [outcome] = report.candidates
    assert (outcome.version, outcome.status_before, outcome.status_after) == (
        better,
        "proposed",
        "awaiting_approval",
    )
    assert (outcome.pairs, outcome.mean_delta, outcome.decision) == (12, 0.5, "pass")
    assert outcome.p_value is not None and outcome.p_value < 0.05
    assert (report.champion_version, report.metric_calls, report.stop_reason) == (1, 24, None)
    # both versions were replayed on exactly the 12 events received after the candidate existed
    assert replayed_on(world, 1) == replayed_on(world, better) == fresh
    row = version(world, better)
    assert row.status == "awaiting_approval" and row.evidence is not None
    assert row.evidence["pareto_mean"] == 0.5  # the optimizer's evidence is kept
    shadow = row.evidence["shadow"]
    assert (shadow["n"], shadow["shadow_mean"], shadow["champion_mean"]) == (12, 0.5, 0.0)
    assert (shadow["mode"], shadow["champion_version"], shadow["decision"]) == (
        "pointwise",
        1,
        "pass",
    )
    assert shadow["events_from"] == aware(row.created_at).isoformat()
    assert shadow["p_value"] == outcome.p_value and shadow["reason"].startswith("passed:")
    trail = [(a.from_status, a.to_status, a.action, a.actor) for a in audit_trail(world, NAME)]
    assert trail[-2:] == [
        ("proposed", "shadow", "shadow", "shadow"),
        ("shadow", "awaiting_approval", "gate", "shadow"),
    ]
    assert shadow["started_at"] == audit_trail(world, NAME, better)[-2].at.isoformat()


def test_a_worse_candidate_is_rejected(
    database_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> None:
    engine = migrated_engine(database_url)
    seed_prompt(engine, NAME, {"system_prompt": NEXT_STEP}, datetime.now(UTC))
    worse = propose(engine, SEED)
    traffic(engine, questions(12), seed=3)
    report = run_pass(engine, llm_server)
    [outcome] = report.candidates
    assert (outcome.status_after, outcome.decision, outcome.mean_delta) == (
        "rejected",
        "fail",
        -0.5,
    )
    assert outcome.reason.startswith("rejected: worse than the champion")
    row = version(engine, worse)
    assert row.status == "rejected" and row.evidence is not None
    assert row.evidence["shadow"]["decision"] == "fail"
    last = audit_trail(engine, NAME, worse)[-1]
    assert (last.to_status, last.action, last.actor, last.reason) == (
        "rejected",
        "gate",
        "shadow",
        outcome.reason,
    )


def test_a_copy_of_the_champion_never_passes_and_is_rejected_at_its_deadline(
    world: Engine, llm_server: LlmServer
) -> None:
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    now = [start]
    copy = propose(world, SEED)
    traffic(world, questions(12), seed=3)
    first = run_pass(world, llm_server, clock=lambda: now[0])
    assert [(o.status_after, o.decision) for o in first.candidates] == [("shadow", "wait")]
    assert first.candidates[0].reason == "collecting: inconclusive (p=1, alpha 0.05) on 12 pairs"
    figures = version(world, copy).evidence["shadow"]  # type: ignore[index]
    assert (figures["n"], figures["mean_delta"], figures["decision"]) == (12, 0.0, "wait")
    assert figures["deadline"] == (start + timedelta(hours=72)).isoformat()

    now[0] = start + timedelta(hours=71)
    assert run_pass(world, llm_server, clock=lambda: now[0]).candidates[0].decision == "wait"
    now[0] = start + timedelta(hours=72)
    [late] = run_pass(world, llm_server, clock=lambda: now[0]).candidates
    assert (late.status_after, late.decision) == ("rejected", "fail")
    assert late.reason == "deadline: inconclusive (p=1, alpha 0.05) after 12 pairs"
    assert version(world, copy).status == "rejected"


def test_reaching_the_most_pairs_is_the_deadline(
    sqlite_world: Engine, llm_server: LlmServer
) -> None:
    copy = propose(sqlite_world, SEED)
    traffic(sqlite_world, questions(14), seed=3)
    [outcome] = run_pass(sqlite_world, llm_server, shadow_max_pairs=12).candidates
    assert (outcome.pairs, outcome.status_after) == (12, "rejected")
    assert outcome.reason.startswith("deadline: inconclusive")
    assert len(replayed_on(sqlite_world, copy)) == 12  # the oldest 12 of the 14


# --- what a pass pays ---------------------------------------------------------------------------


def test_the_champion_is_replayed_once_for_every_candidate_and_every_pass(
    world: Engine, llm_server: LlmServer
) -> None:
    first, second = propose(world, NEXT_STEP), propose(world, ANSWERS)
    fresh = traffic(world, questions(8), seed=3)
    report = run_pass(world, llm_server, shadow_min_pairs=50)
    assert [o.status_after for o in report.candidates] == ["shadow", "shadow"]
    assert report.metric_calls == 3 * 8  # the champion's 8 replays serve both candidates
    assert replayed_on(world, 1) == replayed_on(world, first) == replayed_on(world, second) == fresh

    requests = len(llm_server.bodies)
    again = run_pass(world, llm_server, shadow_min_pairs=50)
    assert (again.metric_calls, len(llm_server.bodies)) == (0, requests)
    assert [o.pairs for o in again.candidates] == [8, 8]

    more = traffic(world, questions(3), seed=4)
    third = run_pass(world, llm_server, shadow_min_pairs=50)
    assert third.metric_calls == 3 * 3
    assert replayed_on(world, 1) == fresh + more


def test_a_budget_cut_leaves_partial_figures_and_the_next_pass_goes_on(
    sqlite_world: Engine, llm_server: LlmServer
) -> None:
    metrics = Metrics([NAME])
    better = propose(sqlite_world, NEXT_STEP)
    traffic(sqlite_world, questions(12), seed=3)
    # 15 calls: the champion's 12 replays, then 3 of the candidate's
    cut = run_pass(sqlite_world, llm_server, metrics, shadow_max_metric_calls=15)
    assert (cut.metric_calls, cut.stop_reason) == (15, "metric_calls")
    [partial] = cut.candidates
    assert (partial.pairs, partial.status_after, partial.reason) == (
        3,
        "shadow",
        "collecting: 3 of 10 pairs",
    )
    figures = version(sqlite_world, better).evidence["shadow"]  # type: ignore[index]
    assert (figures["n"], figures["mean_delta"], figures["decision"]) == (3, 0.5, "wait")
    assert gauge(metrics, "shadow_pairs", better) == 3
    assert gauge(metrics, "shadow_score_delta", better) == 0.5

    rest = run_pass(sqlite_world, llm_server, metrics, shadow_max_metric_calls=15)
    assert (rest.metric_calls, rest.stop_reason) == (9, None)
    assert [(o.pairs, o.status_after) for o in rest.candidates] == [(12, "awaiting_approval")]
    # it left shadow: its series are gone, so version labels stay bounded
    assert gauge(metrics, "shadow_pairs", better) is None
    assert gauge(metrics, "shadow_score_delta", better) is None


def test_only_the_best_few_are_in_shadow_at_once(world: Engine, llm_server: LlmServer) -> None:
    metrics = Metrics([NAME])
    low = propose(world, NEXT_STEP, pareto_mean=0.6)
    best = propose(world, ANSWERS, pareto_mean=0.9)
    newest = propose(world, f"{NEXT_STEP} Be brief.", pareto_mean=0.6)
    traffic(world, questions(4), seed=3)
    settings = {"shadow_candidates": 2, "shadow_min_pairs": 50}
    first = run_pass(world, llm_server, metrics, **settings)
    assert [o.version for o in first.candidates] == [best, newest]  # ties go to the newest
    statuses = {v: c.status for v, c in candidates_of(world, NAME).items()}
    assert (statuses[low], statuses[best], statuses[newest]) == ("proposed", "shadow", "shadow")
    assert gauge(metrics, "shadow_pairs", best) == 4

    reject(world, NAME, best, by="alice", reason="too long", now=datetime.now(UTC))
    second = run_pass(world, llm_server, metrics, **settings)
    assert [o.version for o in second.candidates] == [low, newest]
    assert version(world, low).status == "shadow"
    assert gauge(metrics, "shadow_pairs", best) is None  # a person took it out of shadow
    assert gauge(metrics, "shadow_pairs", low) == 4


def test_a_segment_that_regresses_blocks_the_pass(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> None:
    engine = migrated_engine(sqlite_url)
    seed_prompt(engine, NAME, {"system_prompt": NEXT_STEP}, datetime.now(UTC))
    candidate = propose(engine, ANSWERS)
    # the test judge obeys `score=X` in a reply: a candidate that echoes these billing
    # questions scores 0 on them (-0.5), and +0.25 on every shipping question
    billing = ["Refund my card score=0"] * 4
    traffic(engine, questions(30) + billing, seed=3, segments=["shipping"] * 30 + ["billing"] * 4)
    blocked = run_pass(engine, llm_server, shadow_min_pairs=30, shadow_segment_min_pairs=4)
    [outcome] = blocked.candidates
    assert (outcome.status_after, outcome.decision, outcome.pairs) == ("shadow", "wait", 34)
    assert outcome.mean_delta is not None and outcome.mean_delta > 0.1
    assert outcome.p_value is not None and outcome.p_value < 0.05  # better overall, yet
    assert outcome.reason.startswith("collecting: segment 'billing' regressed (-0.500 mean")
    figures = version(engine, candidate).evidence["shadow"]  # type: ignore[index]
    assert figures["regressed"] == ["billing"]
    assert figures["segments"]["shipping"] == {"n": 30, "mean_delta": 0.25}

    # a looser segment rule on the same pairs (cached: nothing paid) lets it through
    loose = run_pass(
        engine,
        llm_server,
        shadow_min_pairs=30,
        shadow_segment_min_pairs=4,
        shadow_segment_delta=0.6,
    )
    assert (loose.metric_calls, loose.candidates[0].status_after) == (0, "awaiting_approval")


# --- pairwise mode ------------------------------------------------------------------------------


def comparisons(engine: Engine) -> list[Comparison]:
    with transaction(engine) as connection:
        return [
            Comparison.model_validate(row._mapping)
            for row in connection.execute(select(Comparison))
        ]


def test_pairwise_mode_passes_a_better_candidate(world: Engine, llm_server: LlmServer) -> None:
    better = propose(world, NEXT_STEP)
    traffic(world, questions(12), seed=3)
    waiting = run_pass(world, llm_server, shadow_mode="pairwise", shadow_min_pairs=20)
    assert waiting.metric_calls == 12 + 12 + 12  # two replays and one comparison per event
    assert [(o.pairs, o.mean_delta) for o in waiting.candidates] == [(12, 1.0)]
    assert {(c.winner, c.champion_id) for c in comparisons(world)} == {("a", version(world, 1).id)}
    assert len(comparisons(world)) == 12

    requests = len(llm_server.bodies)
    passed = run_pass(world, llm_server, shadow_mode="pairwise")
    assert (passed.metric_calls, len(llm_server.bodies)) == (0, requests)  # verdicts cached
    assert passed.candidates[0].status_after == "awaiting_approval"
    shadow = version(world, better).evidence["shadow"]  # type: ignore[index]
    assert (shadow["mode"], shadow["shadow_mean"], shadow["champion_mean"]) == ("pairwise", 1, 0)


def test_failed_comparisons_are_asked_again_next_pass(
    sqlite_world: Engine, llm_server: LlmServer
) -> None:
    metrics = Metrics([NAME])
    better = propose(sqlite_world, NEXT_STEP)
    traffic(sqlite_world, questions(12), seed=3)
    run_pass(sqlite_world, llm_server, shadow_min_pairs=50)  # the replays, cached
    llm_server.fault_rate, llm_server.fault_kinds = 1.0, ("500",)
    failed = run_pass(sqlite_world, llm_server, metrics, shadow_mode="pairwise", llm_max_retries=0)
    assert [(o.pairs, o.status_after) for o in failed.candidates] == [(0, "shadow")]
    assert comparisons(sqlite_world) == []
    assert gauge(metrics, "shadow_pairs", better) == 0
    assert gauge(metrics, "shadow_score_delta", better) is None  # no pairs, no delta

    llm_server.fault_rate = 0.0
    again = run_pass(sqlite_world, llm_server, metrics, shadow_mode="pairwise")
    assert [(o.pairs, o.status_after) for o in again.candidates] == [(12, "awaiting_approval")]


# --- edges --------------------------------------------------------------------------------------


def test_a_prompt_without_an_active_version_is_left_alone(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> None:
    engine = migrated_engine(sqlite_url)
    now = datetime.now(UTC)
    insert_candidate(engine, NAME, {"system_prompt": SEED}, [], None, "seed", [], now)
    orphan = propose(engine, NEXT_STEP)
    traffic(engine, questions(12), seed=3)
    report = run_pass(engine, llm_server)
    assert (report.champion_version, report.candidates, report.metric_calls) == (None, [], 0)
    assert version(engine, orphan).status == "proposed"
    assert llm_server.bodies == []


def test_a_decision_on_a_version_a_person_moved_meanwhile_leaves_it_there(
    sqlite_world: Engine, llm_server: LlmServer
) -> None:
    better = propose(sqlite_world, NEXT_STEP)
    run_pass(sqlite_world, llm_server)  # into shadow; no fresh traffic yet
    seen = version(sqlite_world, better)
    assert seen.status == "shadow"
    reject(sqlite_world, NAME, better, by="alice", reason="not now", now=datetime.now(UTC))
    shadow = ShadowPass(sqlite_world, world_settings(llm_server.api_base), SPEC)
    for outcome in ("pass", "wait"):
        decision = GateDecision(outcome, f"{outcome}: test", {})  # type: ignore[arg-type]
        status = run_with_models(shadow._apply(seen, decision, {}, datetime.now(UTC)))
        assert status == "rejected"
    trail = [(a.to_status, a.action, a.actor) for a in audit_trail(sqlite_world, NAME, better)]
    assert trail[-2:] == [("shadow", "shadow", "shadow"), ("rejected", "reject", "alice")]
    # the stale decision wrote nothing: the figures are still the first pass's
    assert version(sqlite_world, better).evidence["shadow"]["n"] == 0  # type: ignore[index]
