"""The optimize and shadow jobs: each runs on schedule, never overlaps itself, and on PostgreSQL
only the replica holding that job's leader lock optimizes, or shadows."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, create_engine, select, text

from sidecar.metrics import Metrics
from sidecar.runtime.scheduler import JobScheduler, trigger_for
from sidecar.settings import PromptsConfig
from sidecar.store.candidates import candidates_of, insert_candidate, mark_proposed
from sidecar.store.leadership import OPTIMIZER_LOCK, SHADOW_LOCK
from sidecar.store.repository import seed_prompt, transaction
from sidecar.store.tables import MutationAttempt, OptimizationRun
from tests.helpers import metric_value, wait_until
from tests.llm_server import LlmServer, SimpleWorld
from tests.world import SEED, SPEC, live_traffic, seed_world, world_settings


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
    metrics = Metrics([SPEC.name])
    settings = world_settings(llm_server.api_base, optimize_schedule="1", optimize_patience=2)
    scheduler = JobScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics).start()
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
    metrics = Metrics([SPEC.name])
    settings = world_settings(llm_server.api_base, optimize_patience=2)
    scheduler = JobScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics)
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
    metrics = Metrics([SPEC.name])
    scheduler = JobScheduler(
        engine, world_settings(llm_server.api_base), PromptsConfig(prompts=[SPEC]), metrics
    )
    scheduler.run_once()
    assert metric_value(metrics, "optimization_runs_total", outcome="skipped") == 1
    assert runs(engine) == []


def test_schedules_are_seconds_or_cron() -> None:
    assert trigger_for("90").interval.total_seconds() == 90
    cron = trigger_for("*/15 * * * *")
    assert str(cron.fields[6]) == "*/15"  # minute


# --- the shadow job -----------------------------------------------------------------------------


def shadowed_world(engine: Engine, server: LlmServer) -> int:
    """A proposed version that names the next step (0.5 where the seed scores 0), and 12 events
    received after it was created; its version."""
    now = datetime.now(UTC)
    text = f"{SEED} Always end by naming the next step."
    better = insert_candidate(engine, SPEC.name, {"system_prompt": text}, [1], None, "", [], now)
    mark_proposed(engine, SPEC.name, [better.version], "beat the champion", now)
    live_traffic(engine, server, 12, seed=2)
    return better.version


def status_of(engine: Engine, version: int) -> str:
    return candidates_of(engine, SPEC.name)[version].status


def test_the_shadow_job_runs_passes_on_schedule(world: Engine, llm_server: LlmServer) -> None:
    better = shadowed_world(world, llm_server)
    metrics = Metrics([SPEC.name])
    config = PromptsConfig(prompts=[SPEC])
    collecting = world_settings(llm_server.api_base, shadow_min_pairs=50)
    JobScheduler(world, collecting, config, metrics).shadow_once()
    assert status_of(world, better) == "shadow"
    assert metric_value(metrics, "candidates", prompt=SPEC.name, status="shadow") == 1
    assert metric_value(metrics, "shadow_pairs", prompt=SPEC.name, version=str(better)) == 12

    settings = world_settings(
        llm_server.api_base, shadow_schedule="1", optimize_schedule="3600", shadow_min_pairs=10
    )
    gated_after = datetime.now(UTC).timestamp()
    scheduler = JobScheduler(world, settings, config, metrics).start()
    try:
        wait_until(lambda: status_of(world, better) == "awaiting_approval", 60, "the gate")
        wait_until(
            lambda: metric_value(metrics, "shadow_passes_total", outcome="finished") >= 2,
            60,
            "the scheduled pass to finish",
        )
    finally:
        scheduler.stop()
    assert runs(world) == []  # the optimize job is not due
    # the gauge follows the store, down to 0 for a status the version left
    assert metric_value(metrics, "candidates", prompt=SPEC.name, status="shadow") == 0
    assert metric_value(metrics, "candidates", prompt=SPEC.name, status="awaiting_approval") == 1
    waiting = "awaiting_approval_since_timestamp_seconds"
    assert gated_after <= metric_value(metrics, waiting, prompt=SPEC.name) <= time.time()
    labels = {"prompt": SPEC.name, "version": str(better)}
    assert metrics.registry.get_sample_value("gepa_sidecar_shadow_pairs", labels) is None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_only_the_leader_shadows(world: Engine, llm_server: LlmServer, database_url: str) -> None:
    better = shadowed_world(world, llm_server)
    metrics = Metrics([SPEC.name])
    settings = world_settings(llm_server.api_base, shadow_min_pairs=10)
    scheduler = JobScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics)
    other_replica = create_engine(database_url)
    with other_replica.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SHADOW_LOCK})
        scheduler.shadow_once()
        assert status_of(world, better) == "proposed"
        assert metric_value(metrics, "shadow_passes_total", outcome="not_leader") == 1
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SHADOW_LOCK})
        connection.commit()
    other_replica.dispose()
    scheduler.shadow_once()
    assert status_of(world, better) == "awaiting_approval"
    assert metric_value(metrics, "shadow_passes_total", outcome="finished") == 1


def test_a_failed_shadow_pass_is_counted_not_raised(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> None:
    engine = migrated_engine(sqlite_url)
    seed_prompt(engine, SPEC.name, {"system_prompt": SEED}, datetime.now(UTC))
    now = datetime.now(UTC)
    insert_candidate(engine, SPEC.name, {"system_prompt": "Be kind."}, [1], None, "", [], now)
    mark_proposed(engine, SPEC.name, [2], "beat the champion", now)
    with transaction(engine) as connection:
        connection.execute(text("DROP TABLE judgments"))
        connection.execute(text("DROP TABLE events"))  # the store fails the pass's query
    metrics = Metrics([SPEC.name])
    settings = world_settings(llm_server.api_base)
    JobScheduler(engine, settings, PromptsConfig(prompts=[SPEC]), metrics).shadow_once()
    assert metric_value(metrics, "shadow_passes_total", outcome="failed") == 1
    assert metric_value(metrics, "shadow_passes_total", outcome="finished") == 0
    assert metric_value(metrics, "candidates", prompt=SPEC.name, status="shadow") == 1


def test_a_run_that_fails_is_recorded_and_counted_and_the_next_turn_runs(
    world: Engine, llm_server: LlmServer
) -> None:
    metrics = Metrics([SPEC.name])
    settings = world_settings(llm_server.api_base, optimize_patience=2)
    scheduler = JobScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics)
    with transaction(world) as connection:  # the store fails the run's first cached evaluation
        connection.execute(text("ALTER TABLE evaluations RENAME TO evaluations_away"))
    scheduler.run_once()  # does not raise
    [failed] = runs(world)
    assert failed.status == "failed" and failed.finished_at is not None
    assert "database error" in (failed.error or "")
    assert metric_value(metrics, "optimization_runs_total", outcome="failed") == 1
    with transaction(world) as connection:
        connection.execute(text("ALTER TABLE evaluations_away RENAME TO evaluations"))
    scheduler.run_once()
    assert [r.status for r in runs(world)] == ["failed", "finished"]
    assert metric_value(metrics, "optimization_runs_total", outcome="finished") == 1
    assert metric_value(metrics, "candidates", prompt=SPEC.name, status="active") == 1


class StallsAfterReflection(SimpleWorld):
    """The task model stops answering once the first reflection is asked: the first child's
    minibatch replays all fail, through no fault of its text."""

    def __init__(self) -> None:
        self.server: LlmServer | None = None

    def reflect(self, prompt: str) -> str:
        assert self.server is not None
        self.server.stalls.setdefault("task", self.server.kinds["task"])
        return super().reflect(prompt)


def test_a_child_the_provider_failed_to_score_says_so_not_budget_spent(
    sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    world = StallsAfterReflection()
    with LlmServer(world=world) as server:
        world.server, server.hang_s = server, 2.0
        engine = seed_world(migrated_engine(sqlite_url), server, 12)
        settings = world_settings(
            server.api_base, llm_timeout_s=0.3, llm_max_retries=0, optimize_patience=2
        )
        metrics = Metrics([SPEC.name])
        JobScheduler(engine, settings, PromptsConfig(prompts=[SPEC]), metrics).run_once()
    [run] = runs(engine)
    assert (run.status, run.metric_calls < settings.run_max_metric_calls) == ("finished", True)
    with transaction(engine) as connection:
        [row] = connection.execute(select(MutationAttempt)).all()
    attempt = MutationAttempt.model_validate(row._mapping)
    assert attempt.outcome == "failed"
    size = settings.optimize_minibatch_size
    assert attempt.summary.endswith(f"(not scored: {size} of {size} minibatch evaluations failed)")


def test_a_replay_the_provider_failed_is_asked_once_more(
    world: Engine, llm_server: LlmServer
) -> None:
    better = shadowed_world(world, llm_server)
    llm_server.script = ["500", "500"]  # the champion's first two replays, with no retry left
    settings = world_settings(llm_server.api_base, llm_max_retries=0, shadow_min_pairs=10)
    metrics = Metrics([SPEC.name])
    JobScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics).shadow_once()
    assert llm_server.requests["500"] == 2
    figures = (candidates_of(world, SPEC.name)[better].evidence or {})["shadow"]
    assert (figures["n"], figures["events"], figures["unpaired"]) == (12, 12, 0)
    assert status_of(world, better) == "awaiting_approval"
