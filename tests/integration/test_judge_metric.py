"""Code metrics on the real path: judge workers score stored events with a metric alone and with
a rubric averaged with it (the test model server through litellm, a SQLite file), a failing
metric's judgments are kept and retried, and an optimizer run replays with the metric as judge."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from sidecar.events import ConsumedEvent
from sidecar.judge.judge import judge_for
from sidecar.judge.rubric import SYSTEM as JUDGE_SYSTEM
from sidecar.judge.worker import JudgeWorker
from sidecar.llm.gateway import Gateway
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.optimize.engine import OptimizationRun
from sidecar.settings import JudgeBlock, PromptsConfig, PromptSpec, load_settings
from sidecar.store.judgments import judgments_for
from sidecar.store.repository import store_events, transaction
from sidecar.store.tables import Evaluation, Event, Judgment
from tests.helpers import consumed, wait_until
from tests.llm_server import LlmServer, rule_score
from tests.world import SPEC, seed_world, world_settings

HERE = __name__
RUBRIC = "Score 1.0 when the reply names the next step, is polite and on topic."
REPLIES = (
    "Sorry for the wait! Next step: your order ships today.",
    "It ships tomorrow.",
    "Thanks for asking about your order, it is on its way.",
)


def ships_checks(inputs: dict[str, str], output: str) -> tuple[float, str]:
    """The policy checklist of these tests: a reply must say when the order ships."""
    if "ships" in output:
        return 1.0, "says when the order ships"
    return 0.0, "does not say when the order ships"


CHECKS_SERVICE = {"down": True}


def flaky_checks(inputs: dict[str, str], output: str) -> tuple[float, str]:
    """Raises while its (pretend) service is down, as a metric calling out might."""
    if CHECKS_SERVICE["down"]:
        raise RuntimeError("checks service down")
    return ships_checks(inputs, output)


def world_checks(inputs: dict[str, str], output: str) -> tuple[float, str]:
    """The world's judge rule, in code: what the optimizer must climb without the judge model."""
    return rule_score(inputs["user_message"], output)


def settings_for(server: LlmServer, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "judge_model": "openai/local",
        "judge_api_base": server.api_base,
        "llm_backoff_base_s": 0.01,
        "llm_backoff_cap_s": 0.05,
        "judge_retry_after_s": 0.05,
        "judge_poll_interval_s": 0.05,
        **overrides,
    }
    return load_settings(**values)


def spec_judged_by(**judge: Any) -> PromptSpec:
    return PromptSpec(
        name="customer-care", seed={"system_prompt": "Help."}, judge=JudgeBlock(**judge)
    )


@pytest.fixture
def engine(sqlite_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    return migrated_engine(sqlite_url)


@pytest.fixture
def run_worker() -> Iterator[Callable[[Engine, Any, PromptSpec], JudgeWorker]]:
    workers: list[JudgeWorker] = []

    def start(engine: Engine, settings: Any, spec: PromptSpec) -> JudgeWorker:
        metrics = Metrics([spec.name])
        config = PromptsConfig(prompts=[spec])
        worker = JudgeWorker(engine, Gateway(settings, metrics), config, metrics).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def store_replies(engine: Engine, n: int) -> None:
    rng = random.Random(5)
    batch = [
        ConsumedEvent(item.event.model_copy(update={"output": REPLIES[i % len(REPLIES)]}), 0, i)
        for i, item in enumerate(consumed(rng, n))
    ]
    store_events(engine, batch, {}, datetime.now(UTC))


def events_by_row(engine: Engine) -> dict[int, tuple[dict[str, str], str]]:
    with transaction(engine) as connection:
        rows = connection.execute(select(Event.id, Event.inputs, Event.output)).all()
    return {row_id: (inputs, output) for row_id, inputs, output in rows}


def judged(engine: Engine, version: str) -> list[Judgment]:
    return [j for j in judgments_for(engine) if j.status == "ok" and j.judge_version == version]


def judge_model_calls(server: LlmServer) -> int:
    """Requests that asked the judge model for a verdict (pointwise or pairwise)."""
    return sum(1 for body in server.bodies if body["messages"][0]["content"] == JUDGE_SYSTEM)


def test_a_worker_judges_with_the_metric_alone_and_never_asks_the_model(
    engine: Engine, llm_server: LlmServer, run_worker: Callable[..., JudgeWorker]
) -> None:
    store_replies(engine, 9)
    settings = settings_for(llm_server)
    spec = spec_judged_by(metric=f"{HERE}:ships_checks")
    worker = run_worker(engine, settings, spec)
    version = judge_for(Gateway(settings), spec).version
    assert version.startswith(f"{HERE}:ships_checks#")
    wait_until(lambda: len(judged(engine, version)) == 9, 30, "9 events judged by the metric")
    worker.stop()
    assert worker.failed is None
    events = events_by_row(engine)
    for row in judgments_for(engine):
        assert (row.score, row.feedback) == ships_checks(*events[row.event_row_id])
    assert {row.score for row in judgments_for(engine)} == {0.0, 1.0}
    assert sum(llm_server.requests.values()) == 0


def test_a_rubric_and_a_metric_are_averaged_with_both_reasons(
    engine: Engine, llm_server: LlmServer, run_worker: Callable[..., JudgeWorker]
) -> None:
    store_replies(engine, 6)
    settings = settings_for(llm_server)
    spec = spec_judged_by(rubric=RUBRIC, metric=f"{HERE}:ships_checks")
    run_worker(engine, settings, spec)
    version = judge_for(Gateway(settings), spec).version
    wait_until(lambda: len(judged(engine, version)) == 6, 30, "6 events judged")
    events = events_by_row(engine)
    for row in judgments_for(engine):
        inputs, output = events[row.event_row_id]
        model_score, model_feedback = rule_score(inputs["user_message"], output)
        checks_score, checks_feedback = ships_checks(inputs, output)
        assert row.score == pytest.approx((model_score + checks_score) / 2)
        assert row.feedback == f"judge: {model_feedback} | checks: {checks_feedback}"
    assert judge_model_calls(llm_server) == 6
    rubric_only = judge_for(Gateway(settings), spec_judged_by(rubric=RUBRIC)).version
    assert version != rubric_only


def test_a_failing_metric_is_kept_and_retried_without_stopping_the_worker(
    engine: Engine, llm_server: LlmServer, run_worker: Callable[..., JudgeWorker]
) -> None:
    store_replies(engine, 3)
    settings = settings_for(llm_server)
    spec = spec_judged_by(metric=f"{HERE}:flaky_checks")
    CHECKS_SERVICE["down"] = True
    try:
        worker = run_worker(engine, settings, spec)
        wait_until(
            lambda: (
                sum(j.status == "error" and j.attempts >= 2 for j in judgments_for(engine)) == 3
            ),
            30,
            "3 failed judgments, each tried twice",
        )
        assert worker.alive
        for row in judgments_for(engine):
            assert (
                row.error == f"metric {HERE}:flaky_checks raised RuntimeError: checks service down"
            )
            assert row.next_attempt_at is not None
    finally:
        CHECKS_SERVICE["down"] = False
    version = judge_for(Gateway(settings), spec).version
    wait_until(lambda: len(judged(engine, version)) == 3, 30, "the retried judgments")
    worker.stop()
    assert worker.failed is None
    events = events_by_row(engine)
    for row in judgments_for(engine):
        assert (row.score, row.feedback, row.error) == (
            *ships_checks(*events[row.event_row_id]),
            None,
        )
        assert row.attempts >= 3


def test_an_optimizer_run_replays_with_the_metric_as_its_judge(
    engine: Engine, llm_server: LlmServer, run_worker: Callable[..., JudgeWorker]
) -> None:
    settings = world_settings(llm_server.api_base)
    spec = SPEC.model_copy(update={"judge": JudgeBlock(metric=f"{HERE}:world_checks")})
    seed_world(engine, llm_server, 24)  # stored as if judged by the world's judge model
    version = judge_for(Gateway(settings), spec).version
    worker = run_worker(engine, settings, spec)  # the metric re-judges it under its own version
    wait_until(lambda: len(judged(engine, version)) == 24, 30, "24 events judged by the metric")
    worker.stop()
    report = run_with_models(OptimizationRun(engine, settings, spec, seed=3).execute())
    assert judge_model_calls(llm_server) == 0  # neither live judgments nor replays asked it
    assert (report.champion_score, report.best_score) == (0.0, 1.0)
    assert report.stop_reason == "perfect_on_pareto"
    with transaction(engine) as connection:
        replays = [
            Evaluation.model_validate(row._mapping)
            for row in connection.execute(select(Evaluation))
        ]
    assert len(replays) >= report.pareto_size
    events = events_by_row(engine)
    for replay in replays:
        inputs, _ = events[replay.event_row_id]
        assert replay.judge_version == version
        assert (replay.score, replay.feedback) == world_checks(inputs, replay.output)
    assert {replay.score for replay in replays} >= {0.0, 1.0}


def test_pairwise_weighs_the_judge_model_and_the_metric_equally(llm_server: LlmServer) -> None:
    spec = spec_judged_by(rubric=RUBRIC, metric=f"{HERE}:ships_checks")
    judge = judge_for(Gateway(settings_for(llm_server)), spec)
    inputs = {"user_message": "Where is my order?"}
    full, ships_only, polite_only = REPLIES
    agreed = run_with_models(judge.compare(inputs, full, polite_only))
    assert (agreed.winner, agreed.orders) == ("a", ("A", "B"))
    assert agreed.feedback == (
        "judge: A scored 1.0, B scored 0.5. / A scored 0.5, B scored 1.0.",
        "checks on a: 1.00, says when the order ships; "
        "checks on b: 0.00, does not say when the order ships",
    )
    # the model prefers the polite reply, the metric the one that says when it ships: a tie
    opposed = run_with_models(judge.compare(inputs, polite_only, ships_only))
    assert (opposed.winner, opposed.orders) == ("tie", ("A", "B"))
    llm_server.position_bias = "A"  # the model cannot tell them apart: the metric decides
    biased = run_with_models(judge.compare(inputs, full, polite_only))
    assert (biased.winner, biased.orders) == ("a", ("A", "A"))
    assert judge_model_calls(llm_server) == 6
