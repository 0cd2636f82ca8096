"""What live judging may cost, with real parts: the judge worker, a real model server reached
through litellm (a priced model name, so litellm prices every reply), real databases. Time is
a clock the test moves, so an hour passes without waiting one."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from sidecar.cli.service import _format_status
from sidecar.events import ConsumedEvent
from sidecar.judge.judge import judge_for
from sidecar.judge.worker import JudgeWorker
from sidecar.llm.gateway import Gateway
from sidecar.llm.ledger import metering
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.settings import PromptsConfig, load_prompts_config, load_settings
from sidecar.store.judgments import judgments_for
from sidecar.store.repository import status_summary, store_events, transaction
from sidecar.store.spend import spend_summary
from sidecar.store.tables import Event, Spend
from tests.helpers import consumed, metric_value, wait_until
from tests.llm_server import LlmServer

NAME = "customer-care"
PRICED = "openai/gpt-4o-mini"  # in litellm's cost map: each reply is priced from its tokens
START = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
CONFIG = "prompts:\n  - name: customer-care\n    seed: {system_prompt: Help.}\n"


class Clock:
    """The worker's clock; only the test moves it."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self._now += timedelta(**delta)


@pytest.fixture
def engine(database_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    return migrated_engine(database_url)


@pytest.fixture
def start_worker() -> Iterator[Callable[..., tuple[JudgeWorker, Metrics]]]:
    workers: list[JudgeWorker] = []

    def start(
        engine: Engine, settings: Any, config: PromptsConfig, clock: Clock
    ) -> tuple[JudgeWorker, Metrics]:
        metrics = Metrics([NAME])
        gateway = Gateway(settings, metrics)
        worker = JudgeWorker(engine, gateway, config, metrics, clock=clock, backlog_every_s=0.1)
        workers.append(worker.start())
        return worker, metrics

    yield start
    for worker in workers:
        worker.stop()


def settings_for(server: LlmServer, tmp_path: Path, config: str = CONFIG, **values: Any) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    return load_settings(
        **{
            "judge_model": PRICED,
            "judge_api_base": server.api_base,
            "judge_poll_interval_s": 0.05,
            "config_file": path,
            **values,
        }
    )


def store(engine: Engine, ages_s: list[float], clock: Clock, seed: int = 1) -> list[int]:
    """One event per age (seconds before the clock's now), stored in the order given; their
    row ids."""
    rng = random.Random(seed)
    batch = [
        ConsumedEvent(item.event, 0, offset)
        for offset, item in enumerate(
            consumed(rng, 1, timestamp=(clock() - timedelta(seconds=age)).isoformat())[0]
            for age in ages_s
        )
    ]
    store_events(engine, batch, {}, clock())
    with transaction(engine) as connection:
        return list(connection.execute(select(Event.id).order_by(Event.id)).scalars())  # type: ignore[arg-type]


def judged_ids(engine: Engine) -> set[int]:
    return {j.event_row_id for j in judgments_for(engine) if j.status == "ok"}


def held_at(engine: Engine, metrics: Metrics, judged: int, cap: str) -> bool:
    """`judged` events judged, and `cap` holds back the rest."""
    return (
        len(judged_ids(engine)) == judged
        and metric_value(metrics, "judge_capped", prompt=NAME, cap=cap) == 1
    )


def backlog_shows(metrics: Metrics, events: int, oldest_s: float) -> bool:
    return (
        metric_value(metrics, "judge_backlog_events", prompt=NAME) == events
        and metric_value(metrics, "judge_oldest_unjudged_seconds", prompt=NAME) == oldest_s
    )


def one_judgments_price(settings: Any, config: PromptsConfig) -> float:
    """What judging one of the tests' events costs on the priced model (they differ only in an
    order number, so every one costs about the same)."""
    judge = judge_for(Gateway(settings), config.prompts[0])
    [item] = consumed(random.Random(99), 1)

    async def priced() -> float:
        meter = metering()
        await judge.score(item.event.inputs, item.event.output)
        return meter.cost_usd

    price = run_with_models(priced())
    assert price > 0, "litellm priced no reply: the test model needs a price"
    return price


def test_the_hourly_budget_holds_within_one_judgment_over_simulated_hours(
    engine: Engine,
    llm_server: LlmServer,
    tmp_path: Path,
    start_worker: Callable[..., tuple[JudgeWorker, Metrics]],
) -> None:
    clock = Clock(START)
    probe = settings_for(llm_server, tmp_path)
    config = load_prompts_config(probe.config_file)
    price = one_judgments_price(probe, config)
    settings = settings_for(llm_server, tmp_path, judge_budget_usd_per_hour=3.5 * price)
    ids = store(engine, [60.0 * (40 - i) for i in range(40)], clock)
    _, metrics = start_worker(engine, settings, config, clock)
    for hour in range(1, 4):
        wait_until(
            lambda h=hour: (
                len(judged_ids(engine)) == 3 * h  # type: ignore[misc]
                and metric_value(metrics, "judge_capped", prompt=NAME, cap="budget") == 1
                and metric_value(metrics, "judge_backlog_events", prompt=NAME) == 40 - 3 * h
            ),
            60,
            f"hour {hour}: three judged, then the budget holds",
        )
        assert judged_ids(engine) == set(ids[-3 * hour :])  # the newest, hour after hour
        clock.advance(minutes=61)
    with transaction(engine) as connection:
        rows = connection.execute(select(Spend.cost_usd, Spend.calls)).all()
    assert [calls for _, calls in rows] == [3, 3, 3]  # one row a simulated hour, all priced
    for cost, _ in rows:
        assert cost <= 3.5 * price + price * 1.05
    assert metric_value(metrics, "judge_requests_total", outcome="ok") == 9  # none twice


def test_the_rate_cap_admits_a_judgment_per_slice_of_its_minute(
    engine: Engine,
    llm_server: LlmServer,
    tmp_path: Path,
    start_worker: Callable[..., tuple[JudgeWorker, Metrics]],
) -> None:
    clock = Clock(START)
    settings = settings_for(llm_server, tmp_path, judge_max_per_minute=6)  # one per 10 s
    store(engine, [float(i) for i in range(20)], clock)
    _, metrics = start_worker(engine, settings, load_prompts_config(settings.config_file), clock)
    wait_until(lambda: held_at(engine, metrics, 1, "rate"), 60, "one judged, then held")
    for step in range(2, 8):
        clock.advance(seconds=10)
        wait_until(lambda s=step: len(judged_ids(engine)) >= s, 60, f"judgment {step}")  # type: ignore[misc]
    clock.advance(seconds=5)  # half a token: nothing more may start
    wait_until(
        lambda: metric_value(metrics, "judge_backlog_events", prompt=NAME) == 13,
        60,
        "the backlog counted after the seventh",
    )
    assert len(judged_ids(engine)) == 7
    assert metric_value(metrics, "judge_requests_total", outcome="ok") == 7


def test_a_backlog_is_judged_newest_first_and_old_events_expire(
    engine: Engine,
    llm_server: LlmServer,
    tmp_path: Path,
    start_worker: Callable[..., tuple[JudgeWorker, Metrics]],
) -> None:
    """1,000 events: 300 older than the age limit, stored among 700 recent ones."""
    clock = Clock(START)
    settings = settings_for(
        llm_server, tmp_path, judge_max_per_minute=6000, judge_max_event_age_hours=24
    )
    old = {i for i in range(1000) if i % 10 in (1, 4, 7)}
    ages = [(30 * 3600.0 + i) if i in old else float(1000 - i) for i in range(1000)]
    ids = store(engine, ages, clock)
    fresh = [row for i, row in enumerate(ids) if i not in old]
    _, metrics = start_worker(engine, settings, load_prompts_config(settings.config_file), clock)
    for step in range(1, 8):  # 6000 a minute: a burst of 100, then 100 a second
        wait_until(
            lambda s=step: judged_ids(engine) == set(fresh[-100 * s :]),  # type: ignore[misc]
            120,
            f"the newest {100 * step} recent events judged",
        )
        clock.advance(seconds=1)
    assert judged_ids(engine) == set(fresh)
    summary = status_summary(engine)["events"]
    assert (summary["judged"], summary["expired"], summary["judge_errors"]) == (700, 300, 0)
    assert metric_value(metrics, "judge_expired_total", prompt=NAME) == 300
    assert metric_value(metrics, "judge_requests_total", outcome="ok") == 700
    wait_until(lambda: backlog_shows(metrics, 0, 0.0), 60, "an empty backlog")


def test_the_backlog_gauges_say_how_much_waits_and_how_old_it_is(
    engine: Engine,
    llm_server: LlmServer,
    tmp_path: Path,
    start_worker: Callable[..., tuple[JudgeWorker, Metrics]],
) -> None:
    clock = Clock(START)
    settings = settings_for(llm_server, tmp_path, judge_max_per_minute=6)
    store(engine, [3600.0, 1800.0, 60.0], clock)
    _, metrics = start_worker(engine, settings, load_prompts_config(settings.config_file), clock)
    wait_until(
        lambda: backlog_shows(metrics, 2, 3600.0),
        60,
        "two waiting, the oldest an hour old (the newest was judged first)",
    )


def test_a_cap_changed_in_the_config_file_takes_effect_at_the_next_start(
    engine: Engine,
    llm_server: LlmServer,
    tmp_path: Path,
    start_worker: Callable[..., tuple[JudgeWorker, Metrics]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(START)
    store(engine, [float(i) for i in range(100)], clock)
    first = settings_for(llm_server, tmp_path, CONFIG + "    judging: {max_per_minute: 600}\n")
    with caplog.at_level(logging.INFO, logger="sidecar.judge.worker"):
        worker, _ = start_worker(engine, first, load_prompts_config(first.config_file), clock)
        wait_until(lambda: len(judged_ids(engine)) == 10, 60, "a burst of ten")
        assert worker.stop()
        second = settings_for(
            llm_server, tmp_path, CONFIG + "    judging: {max_per_minute: 1200}\n"
        )
        start_worker(engine, second, load_prompts_config(second.config_file), clock)
        wait_until(lambda: len(judged_ids(engine)) == 30, 60, "a burst of twenty more")
    told = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("judging customer-care:")
    ]
    assert told == [
        "judging customer-care: no spend cap, at most 600 judgments a minute; "
        "unjudged events older than 168h expire",
        "judging customer-care: no spend cap, at most 1200 judgments a minute; "
        "unjudged events older than 168h expire",
    ]


def test_an_unpriced_model_is_held_by_the_rate_and_its_spend_is_unknown(
    engine: Engine,
    llm_server: LlmServer,
    tmp_path: Path,
    start_worker: Callable[..., tuple[JudgeWorker, Metrics]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(START)
    settings = settings_for(
        llm_server,
        tmp_path,
        judge_model="openai/local",  # no price in litellm's cost map
        judge_budget_usd_per_hour=0.0001,
        judge_max_per_minute=600,
    )
    store(engine, [float(i) for i in range(30)], clock)
    with caplog.at_level(logging.WARNING, logger="sidecar.judge.worker"):
        _, metrics = start_worker(
            engine, settings, load_prompts_config(settings.config_file), clock
        )
        wait_until(lambda: held_at(engine, metrics, 10, "rate"), 60, "a burst of ten, then held")
    assert metric_value(metrics, "judge_capped", prompt=NAME, cap="budget") == 0
    warnings = [r.getMessage() for r in caplog.records if "no price" in r.getMessage()]
    assert len(warnings) == 1
    assert "JUDGE_MAX_PER_MINUTE (600) holds it" in warnings[0]
    spend = spend_summary(engine, clock() + timedelta(minutes=1))["judge"]["last_hour"]
    assert spend == {"cost_usd": 0.0, "calls": 10, "unpriced_calls": 10, "known": False}
    text = _format_status({**status_summary(engine), "spend": spend_summary(engine, clock())})
    assert "judge=unknown(10 unpriced calls)" in text
