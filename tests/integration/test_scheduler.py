"""The optimize job: runs on schedule, never overlaps itself, and on PostgreSQL only the replica
holding the leader lock optimizes."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, create_engine, select, text

from sidecar.metrics import Metrics
from sidecar.runtime.scheduler import OptimizeScheduler, trigger_for
from sidecar.settings import PromptsConfig
from sidecar.store.leadership import OPTIMIZER_LOCK
from sidecar.store.repository import seed_prompt, transaction
from sidecar.store.tables import OptimizationRun
from tests.helpers import metric_value, wait_until
from tests.llm_server import LlmServer
from tests.world import SEED, SPEC, seed_world, world_settings


@pytest.fixture
def world(
    database_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> Engine:
    return seed_world(migrated_engine(database_url), llm_server, 12)


def runs(engine: Engine) -> list[OptimizationRun]:
    with transaction(engine) as connection:
        return [
            OptimizationRun.model_validate(row._mapping)
            for row in connection.execute(select(OptimizationRun).order_by(OptimizationRun.id))
        ]


def test_the_job_runs_on_schedule_without_overlapping(world: Engine, llm_server: LlmServer) -> None:
    metrics = Metrics()
    settings = world_settings(llm_server.api_base, optimize_schedule="1", optimize_patience=2)
    scheduler = OptimizeScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics).start()
    try:
        wait_until(
            lambda: len([r for r in runs(world) if r.status == "finished"]) >= 2, 60, "2 runs"
        )
    finally:
        scheduler.stop()
    done = [r for r in runs(world) if r.finished_at is not None]
    for earlier, later in itertools.pairwise(done):
        assert earlier.finished_at <= later.started_at  # one at a time
    assert metric_value(metrics, "optimization_runs_total", outcome="finished") >= 2
    assert metric_value(metrics, "optimization_metric_calls_total") > 0
    assert metric_value(metrics, "frontier_size", prompt="customer-care") >= 1
    assert metric_value(metrics, "candidates", prompt="customer-care", status="active") == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_only_the_leader_optimizes(world: Engine, llm_server: LlmServer, database_url: str) -> None:
    metrics = Metrics()
    settings = world_settings(llm_server.api_base, optimize_patience=2)
    scheduler = OptimizeScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics)
    other_replica = create_engine(database_url)
    with other_replica.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": OPTIMIZER_LOCK})
        scheduler.run_once()
        assert runs(world) == []
        assert metric_value(metrics, "optimization_runs_total", outcome="not_leader") == 1
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": OPTIMIZER_LOCK})
        connection.commit()
    other_replica.dispose()
    scheduler.run_once()
    assert [r.status for r in runs(world)] == ["finished"]


def test_too_little_traffic_is_a_skipped_turn(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> None:
    engine = migrated_engine(sqlite_url)
    seed_prompt(engine, "customer-care", {"system_prompt": SEED}, datetime.now(UTC))
    metrics = Metrics()
    scheduler = OptimizeScheduler(
        engine, world_settings(llm_server.api_base), PromptsConfig(prompts=[SPEC]), metrics
    )
    scheduler.run_once()
    assert metric_value(metrics, "optimization_runs_total", outcome="skipped") == 1
    assert runs(engine) == []


def test_schedules_are_seconds_or_cron() -> None:
    assert trigger_for("90").interval.total_seconds() == 90
    cron = trigger_for("*/15 * * * *")
    assert str(cron.fields[6]) == "*/15"  # minute
