"""The judge and its workers against a real HTTP model server (through litellm) and real
databases: every event judged, failures kept and retried, restarts resume, versions visible."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from sidecar.events import ConsumedEvent
from sidecar.judge.judge import Judge
from sidecar.judge.verdict import InvalidReply
from sidecar.judge.worker import JudgeWorker
from sidecar.llm.gateway import Gateway
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.runtime.app import App
from sidecar.settings import JudgeBlock, PromptsConfig, PromptSpec, load_settings
from sidecar.store.judgments import judgments_for
from sidecar.store.repository import seed_prompt, status_summary, store_events
from sidecar.store.tables import Judgment
from tests.conftest import Topics
from tests.helpers import (
    consumed,
    encode,
    make_event,
    metric_value,
    produce,
    scaled,
    sidecar_settings,
    wait_until,
)
from tests.llm_server import LlmServer, rule_score

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
RUBRIC = "Score 1.0 when the reply names the next step, is polite and on topic."
REPLIES = (
    "Sorry for the wait! Next step: your order ships today.",
    "It ships tomorrow.",
    "Thanks for asking about your order, it is on its way.",
)


def judge_settings(server: LlmServer, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "judge_model": "openai/local",
        "judge_api_base": server.api_base,
        "llm_backoff_base_s": 0.01,
        "llm_backoff_cap_s": 0.05,
        "llm_timeout_s": 0.5,
        "judge_retry_after_s": 0.05,
        "judge_poll_interval_s": 0.05,
        **overrides,
    }
    return load_settings(**values)


def prompts(rubric: str = RUBRIC, *names: str) -> PromptsConfig:
    return PromptsConfig(
        prompts=[
            PromptSpec(name=name, seed={"system_prompt": "Help."}, judge=JudgeBlock(rubric=rubric))
            for name in (names or ("customer-care",))
        ]
    )


@pytest.fixture
def engine(database_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    return migrated_engine(database_url)


@pytest.fixture
def sqlite_engine(sqlite_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    return migrated_engine(sqlite_url)


def store(engine: Engine, n: int, seed: int = 1, **overrides: Any) -> None:
    rng = random.Random(seed)
    batch = [
        ConsumedEvent(item.event.model_copy(update={"output": REPLIES[i % len(REPLIES)]}), 0, i)
        for i, item in enumerate(consumed(rng, n, **overrides))
    ]
    store_events(engine, batch, {}, NOW)


@pytest.fixture
def run_worker() -> Iterator[Callable[..., JudgeWorker]]:
    workers: list[JudgeWorker] = []

    def start(
        engine: Engine, settings: Any, config: PromptsConfig, metrics: Metrics
    ) -> JudgeWorker:
        worker = JudgeWorker(engine, Gateway(settings, metrics), config, metrics).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def judged(engine: Engine) -> list[Judgment]:
    return [j for j in judgments_for(engine) if j.status == "ok"]


def test_judge_scores_with_feedback_and_asks_for_json_schema(llm_server: LlmServer) -> None:
    judge = Judge(Gateway(judge_settings(llm_server)), RUBRIC)
    inputs = {"user_message": "Where is my order?"}
    verdict = run_with_models(judge.score(inputs, REPLIES[1], {"model": "x"}))
    assert (verdict.score, verdict.feedback) == rule_score(inputs["user_message"], REPLIES[1])
    assert "next step" in verdict.feedback
    body = llm_server.bodies[-1]
    assert body["response_format"]["json_schema"]["name"] == "judgment"
    assert RUBRIC in body["messages"][-1]["content"]


def test_non_json_replies_are_asked_again_then_given_up(llm_server: LlmServer) -> None:
    metrics = Metrics(["customer-care"])
    judge = Judge(Gateway(judge_settings(llm_server), metrics), RUBRIC)
    llm_server.script = ["text", "ok"]
    verdict = run_with_models(judge.score({"user_message": "hi"}, "score=0.3"))
    assert verdict.score == 0.3
    assert metric_value(metrics, "judge_requests_total", outcome="invalid_reply") == 1
    llm_server.script = ["text"] * 3
    with pytest.raises(InvalidReply, match="no JSON object"):
        run_with_models(judge.score({"user_message": "hi"}, "score=0.3"))
    assert metric_value(metrics, "judge_requests_total", outcome="invalid_reply") == 4
    assert metric_value(metrics, "judge_requests_total", outcome="ok") == 1


def test_pairwise_counts_a_win_only_when_both_orders_agree(llm_server: LlmServer) -> None:
    judge = Judge(Gateway(judge_settings(llm_server)), RUBRIC)
    inputs = {"user_message": "Where is my order?"}
    better, worse = REPLIES[0], REPLIES[1]
    result = run_with_models(judge.compare(inputs, better, worse))
    assert (result.winner, result.orders) == ("a", ("A", "B"))
    assert run_with_models(judge.compare(inputs, worse, better)).winner == "b"
    llm_server.position_bias = "A"  # a judge that always prefers whatever it reads first
    biased = run_with_models(judge.compare(inputs, worse, better))
    assert (biased.winner, biased.orders) == ("tie", ("A", "A"))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_every_event_is_judged_under_thirty_percent_faults(
    engine: Engine, llm_server: LlmServer, run_worker: Callable[..., JudgeWorker]
) -> None:
    store(engine, 60)
    seed_prompt(engine, "customer-care", {"system_prompt": "Help."}, NOW)
    llm_server.fault_rate = 0.3
    llm_server.hang_s = 5.0
    metrics = Metrics(["customer-care"])
    settings = judge_settings(llm_server, llm_max_retries=2, judge_concurrency=8)
    worker = run_worker(engine, settings, prompts(), metrics)
    wait_until(lambda: len(judged(engine)) == 60, 120, "60 judged events")
    worker.stop()
    assert worker.failed is None
    assert min(llm_server.requests[kind] for kind in ("429", "500", "hang", "text")) > 0
    rows = judgments_for(engine)
    assert len(rows) == 60
    for row in rows:
        assert row.status == "ok"
        assert 0.0 <= (row.score or 0) <= 1.0 and row.feedback
        assert row.judge_version == Judge(Gateway(settings), RUBRIC).version
    assert metric_value(metrics, "judge_requests_total", outcome="ok") == 60
    assert metric_value(metrics, "judge_score_count", prompt="customer-care", version="1") == 60
    summary = status_summary(engine)["events"]
    assert (summary["judged"], summary["judge_errors"]) == (60, 0)


def test_a_judge_model_that_cannot_answer_pauses_judging_until_a_probe_gets_through(
    sqlite_engine: Engine,
    llm_server: LlmServer,
    run_worker: Callable[..., JudgeWorker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the pause, all 100 events would be rushed through their retries, each failed
    call costing CPU in the chatbot's pod."""
    store(sqlite_engine, 100)
    llm_server.fault_rate = 1.0
    llm_server.fault_kinds = ("500",)
    settings = judge_settings(
        llm_server, llm_max_retries=1, judge_concurrency=4, judge_retry_after_s=0.2
    )
    metrics = Metrics(["customer-care"])

    def said(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    def asked() -> int:
        return len({json.dumps(body["messages"]) for body in list(llm_server.bodies)})

    with caplog.at_level(logging.INFO, logger="sidecar.judge.worker"):
        run_worker(sqlite_engine, settings, prompts(), metrics)
        wait_until(lambda: said("still cannot answer") >= 2, 60, "two probes failed")
        probes = said("still cannot answer")
        # what was in flight when the first failure came back (twice the concurrency), the
        # probes that failed, and at most one probe under way
        assert asked() <= 2 * 4 + probes + 1
        llm_server.fault_rate = 0.0
        wait_until(lambda: len(judged(sqlite_engine)) == 100, 120, "all judged once it answers")
    assert said("judging pauses") == 1
    assert said("the judge model answers again: judging resumes") == 1


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_an_event_the_judge_cannot_score_is_kept_and_retried_later(
    engine: Engine, llm_server: LlmServer, run_worker: Callable[..., JudgeWorker]
) -> None:
    store(engine, 1)
    llm_server.script = ["text", "text", "text"]
    metrics = Metrics(["customer-care"])
    run_worker(engine, judge_settings(llm_server, judge_retry_after_s=0.5), prompts(), metrics)
    wait_until(lambda: len(judgments_for(engine)) == 1, 30, "a judgment row")
    [failed] = judgments_for(engine)
    if failed.status == "error":
        assert "no JSON object" in (failed.error or "")
        assert failed.next_attempt_at is not None
        assert status_summary(engine)["events"]["judge_errors"] == 1
    wait_until(lambda: len(judged(engine)) == 1, 30, "the retried judgment")
    [ok] = judgments_for(engine)
    assert (ok.status, ok.attempts, ok.error) == ("ok", 2, None)
    assert metric_value(metrics, "judge_requests_total", outcome="invalid_reply") == 3
    assert status_summary(engine)["events"]["judge_errors"] == 0


def test_a_restart_resumes_where_the_last_worker_stopped(
    sqlite_engine: Engine, llm_server: LlmServer, run_worker: Callable[..., JudgeWorker]
) -> None:
    engine = sqlite_engine
    store(engine, 40)
    llm_server.latency_s = 0.02
    settings = judge_settings(llm_server, judge_concurrency=2)
    first = run_worker(engine, settings, prompts(), Metrics(["customer-care"]))
    wait_until(lambda: len(judged(engine)) >= 8, 60, "some judged events")
    first.stop()
    done_before = len(judged(engine))
    assert done_before < 40
    assert llm_server.requests["ok"] == done_before  # in-flight calls finished and were stored
    run_worker(engine, settings, prompts(), Metrics(["customer-care"]))
    wait_until(lambda: len(judged(engine)) == 40, 60, "all 40 judged")
    # Nothing judged twice: no event judged before the restart is asked about after it, and every
    # event was asked about. (A call the gateway retried after a slow or lost reply repeats its
    # own prompt, as a loaded CI machine once showed: 41 requests for 40 events.)
    asked = [json.dumps(body["messages"], sort_keys=True) for body in llm_server.bodies]
    before, after = set(asked[:done_before]), set(asked[done_before:])
    assert not before & after
    assert len(before | after) == 40
    assert len(judgments_for(engine)) == 40


def test_a_rubric_change_is_a_new_judge_version(
    sqlite_engine: Engine, llm_server: LlmServer, run_worker: Callable[..., JudgeWorker]
) -> None:
    engine = sqlite_engine
    store(engine, 5)
    settings = judge_settings(llm_server)
    run_worker(engine, settings, prompts(RUBRIC), Metrics(["customer-care"]))
    wait_until(lambda: len(judged(engine)) == 5, 30, "5 judged")
    run_worker(engine, settings, prompts(RUBRIC + " Be brief."), Metrics(["customer-care"]))
    wait_until(lambda: len(judged(engine)) == 10, 30, "5 judged again under the new rubric")
    versions = {row.judge_version for row in judgments_for(engine)}
    assert len(versions) == 2


def test_only_managed_prompts_are_judged(
    sqlite_engine: Engine, llm_server: LlmServer, run_worker: Callable[..., JudgeWorker]
) -> None:
    engine = sqlite_engine
    store(engine, 4, seed=1)
    store(engine, 3, seed=2, prompt_name="billing-bot")
    run_worker(
        engine, judge_settings(llm_server), prompts(RUBRIC, "billing-bot"), Metrics(["billing-bot"])
    )
    wait_until(lambda: len(judged(engine)) == 3, 30, "billing-bot judged")
    assert {row.prompt_name for row in judgments_for(engine)} == {"billing-bot"}


def test_the_app_judges_what_it_consumes(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, llm_server: LlmServer
) -> None:
    settings = sidecar_settings(
        kafka_bootstrap,
        topics,
        sqlite_url,
        judge_model="openai/local",
        judge_api_base=llm_server.api_base,
        judge_poll_interval_s=0.05,
    )
    app = App(settings, prompts())
    thread = threading.Thread(target=app.run, name="app-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: app.judge is not None, 60, "the store ready and the workers started")
        assert app.http is not None
        rng = random.Random(30)
        events = [make_event(rng, output=REPLIES[i % 3]) for i in range(12)]
        keys = [event["event_id"].encode() for event in events]
        produce(kafka_bootstrap, topics.traffic, map(encode, events), keys)
        wait_until(lambda: status_summary(app.engine)["events"]["judged"] == 12, 60, "12 judged")
        with httpx.Client(
            base_url=f"http://127.0.0.1:{app.http.port}", timeout=scaled(10)
        ) as client:
            health = client.get("/healthz").json()
            metrics = client.get("/metrics").text
        assert health["checks"]["judge"] is True
        assert health["detail"]["judge"] == {"running": True, "error": None}
        assert 'gepa_sidecar_judge_score_count{prompt="customer-care",version="1"} 12.0' in metrics
        assert 'gepa_sidecar_judge_requests_total{outcome="ok"} 12.0' in metrics
        assert 'gepa_sidecar_llm_tokens_total{role="judge",type="prompt"}' in metrics
    finally:
        app.stop()
        thread.join(scaled(30))
    assert not thread.is_alive()


def judgments_table(engine: Engine, name_from: str, name_to: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {name_from} RENAME TO {name_to}"))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_database_outage_keeps_the_verdicts_until_they_can_be_stored(
    engine: Engine,
    llm_server: LlmServer,
    run_worker: Callable[..., JudgeWorker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store(engine, 6)
    llm_server.latency_s = 0.3
    metrics = Metrics(["customer-care"])
    worker = run_worker(engine, judge_settings(llm_server), prompts(), metrics)
    wait_until(lambda: llm_server.max_inflight >= 1, 30, "judge calls in flight")
    judgments_table(engine, "judgments", "judgments_away")  # reads and writes fail now
    try:
        wait_until(lambda: "cannot store" in caplog.text, 30, "a failed write")
        wait_until(lambda: "cannot read events to judge" in caplog.text, 30, "a failed read")
        assert worker.alive and worker.failed is None
    finally:
        judgments_table(engine, "judgments_away", "judgments")
    wait_until(lambda: len(judged(engine)) == 6, 60, "all 6 judged once the database is back")
    assert len(judgments_for(engine)) == 6
    # the verdicts were kept, not paid for again (counted where they are used: the server also
    # counts a call the gateway gave up on after the tests' 0.5 s timeout and asked again)
    assert metric_value(metrics, "judge_requests_total", outcome="ok") == 6
    assert worker.alive and worker.failed is None


# --- replicas sharing the work by partition ----------------------------------------------------


def store_on_partitions(engine: Engine, n: int, seed: int) -> None:
    """n events consumed alternately from partitions 0 and 1."""
    rng = random.Random(seed)
    batch = [
        ConsumedEvent(item.event.model_copy(update={"output": REPLIES[i % 3]}), i % 2, i)
        for i, item in enumerate(consumed(rng, n))
    ]
    store_events(engine, batch, {}, NOW)


def test_replicas_each_judge_the_events_of_their_partitions_once(
    engine: Engine, llm_server: LlmServer
) -> None:
    store_on_partitions(engine, 40, seed=40)
    settings = judge_settings(llm_server)
    shares = [Metrics(["customer-care"]), Metrics(["customer-care"])]
    workers = [
        JudgeWorker(
            engine, Gateway(settings, metrics), prompts(), metrics, lambda p=p: frozenset({p})
        )
        for p, metrics in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(judged(engine)) == 40, 60, "40 judged")
    finally:
        for worker in workers:
            worker.stop()
    assert [metric_value(m, "judge_requests_total", outcome="ok") for m in shares] == [20, 20]


def test_a_partition_that_moves_over_is_judged_from_its_oldest_event(
    engine: Engine, llm_server: LlmServer
) -> None:
    """The replica that owned partition 0 died before judging it; the survivor's cursor is
    already past those events when the partition comes over."""
    store_on_partitions(engine, 40, seed=41)
    owned = [frozenset({1})]
    settings = judge_settings(llm_server)
    metrics = Metrics(["customer-care"])
    worker = JudgeWorker(engine, Gateway(settings, metrics), prompts(), metrics, lambda: owned[0])
    worker.start()
    try:
        wait_until(lambda: len(judged(engine)) == 20, 60, "partition 1 judged")
        owned[0] = frozenset({0, 1})
        wait_until(lambda: len(judged(engine)) == 40, 60, "partition 0 judged too")
    finally:
        worker.stop()
    # Each event judged once, counted where the verdicts are used: the server also counts a call
    # the gateway gave up on after its 0.5 s timeout (a loaded machine) and asked again.
    assert metric_value(metrics, "judge_requests_total", outcome="ok") == 40
    assert len(judgments_for(engine)) == 40
