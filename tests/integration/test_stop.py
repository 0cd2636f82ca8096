"""A stop is bounded by SHUTDOWN_GRACE_S. A GEPA run waiting on a model that has stopped
answering is interrupted at its next step, recorded `interrupted`, and keeps the evaluations and
candidates it paid for (the next run starts warm from them); a shadow pass is cut the same way;
`gepa-sidecar run` exits within the grace after SIGTERM, abandoning (and naming) what cannot
stop in time.

The bound is made visible without asking anything of the machine's speed: the grace is a few
seconds, while the model stalls for ten minutes, far beyond the grace times any slowness."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, make_url, select

from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.optimize.engine import OptimizationRun
from sidecar.runtime.scheduler import JobScheduler
from sidecar.settings import PromptsConfig
from sidecar.store.candidates import candidates_of, insert_candidate, latest_frontier, mark_proposed
from sidecar.store.repository import transaction
from sidecar.store.tables import Evaluation
from sidecar.store.tables import OptimizationRun as RunRow
from tests.conftest import Topics
from tests.helpers import metric_value, scaled, wait_until
from tests.llm_server import LlmServer
from tests.processes import Sidecar, Start, sidecar_env
from tests.world import SEED, SPEC, live_traffic, seed_world, world_environment, world_settings

STALL_S = 600.0  # the model's silence: far past any grace below, on any machine
GRACE_S = 3.0
EXIT_MARGIN_S = scaled(2)  # the interpreter's own exit after the deadline, on a slow machine


@pytest.fixture
def world(
    sqlite_url: str, migrated_engine: Callable[[str], Engine], llm_server: LlmServer
) -> Engine:
    return seed_world(migrated_engine(sqlite_url), llm_server, 12)


def stall(server: LlmServer, kind: str, answered: int) -> None:
    """After `answered` requests of `kind`, the model stops answering those (for STALL_S)."""
    server.hang_s = STALL_S
    server.stalls = {kind: answered}


def runs(engine: Engine) -> list[RunRow]:
    with transaction(engine) as connection:
        rows = connection.execute(select(RunRow).order_by(RunRow.id))  # type: ignore[arg-type]
        return [RunRow.model_validate(row._mapping) for row in rows]


def evaluations_of_run(engine: Engine, run_id: int) -> int:
    query = select(func.count()).where(Evaluation.run_id == run_id)  # type: ignore[arg-type]
    with transaction(engine) as connection:
        return int(connection.execute(query).scalar_one())


def assert_interrupted_and_kept(engine: Engine) -> tuple[RunRow, int]:
    """The one run is recorded interrupted; its evaluations and its child are in the store."""
    [run] = runs(engine)
    assert run.status == "interrupted"
    assert run.error is not None and "stop" in run.error
    assert run.metric_calls > 0
    assert evaluations_of_run(engine, run.id or 0) > 0
    children = [c for c in candidates_of(engine, SPEC.name).values() if c.origin_run_id == run.id]
    assert [c.status for c in children] == ["pool"]
    assert children[0].version in run.frontier
    return run, children[0].version


def test_a_stop_interrupts_the_run_in_flight_and_the_next_run_starts_warm(
    world: Engine, llm_server: LlmServer
) -> None:
    stall(llm_server, "reflection", answered=1)  # a first child, then silence
    metrics = Metrics([SPEC.name])
    settings = world_settings(llm_server.api_base)
    scheduler = JobScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics)
    job = threading.Thread(target=scheduler.run_once, name="optimize-job", daemon=True)
    job.start()
    wait_until(lambda: llm_server.requests["hang"] == 1, 60, "a reflection left unanswered")

    assert scheduler.stop(timeout=GRACE_S), "the run outlived the stop's timeout"
    assert metric_value(metrics, "optimization_runs_total", outcome="interrupted") == 1
    assert metric_value(metrics, "optimization_runs_total", outcome="failed") == 0
    interrupted, child = assert_interrupted_and_kept(world)
    assert child in latest_frontier(world, SPEC.name)
    paid = evaluations_of_run(world, interrupted.id or 0)

    llm_server.stalls = {}
    warm = OptimizationRun(world, settings, SPEC, seed=1)
    run_with_models(warm.execute())
    assert child in warm.population.pool  # started from what the interrupted run left
    assert evaluations_of_run(world, interrupted.id or 0) == paid  # kept, never paid again
    assert [run.status for run in runs(world)] == ["interrupted", "finished"]


def test_a_stop_cuts_a_shadow_pass_before_it_decides(world: Engine, llm_server: LlmServer) -> None:
    now = datetime.now(UTC)
    text = f"{SEED} Always end by naming the next step."
    better = insert_candidate(world, SPEC.name, {"system_prompt": text}, [1], None, "", [], now)
    mark_proposed(world, SPEC.name, [better.version], "beat the champion", now)
    live_traffic(world, llm_server, 12, seed=2)
    stall(llm_server, "task", answered=12)  # the champion's 12 replays, then silence
    metrics = Metrics([SPEC.name])
    settings = world_settings(llm_server.api_base, shadow_min_pairs=2)
    scheduler = JobScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics)
    job = threading.Thread(target=scheduler.shadow_once, name="shadow-job", daemon=True)
    job.start()
    wait_until(lambda: llm_server.requests["hang"] >= 1, 60, "a replay left unanswered")

    assert scheduler.stop(timeout=GRACE_S), "the pass outlived the stop's timeout"
    assert metric_value(metrics, "shadow_passes_total", outcome="interrupted") == 1
    assert metric_value(metrics, "shadow_passes_total", outcome="finished") == 0
    # 12 pairs at +0.5 would pass the gate: the pass was cut before it decided
    assert candidates_of(world, SPEC.name)[better.version].status == "shadow"
    with transaction(world) as connection:
        cached = connection.execute(select(func.count()).select_from(Evaluation)).scalar_one()
    assert cached == 12  # the champion's replays, paid before the stall, are kept
    assert not job.is_alive()


def test_a_stop_asked_before_a_job_starts_runs_nothing(
    world: Engine, llm_server: LlmServer
) -> None:
    metrics = Metrics([SPEC.name])
    settings = world_settings(llm_server.api_base)
    scheduler = JobScheduler(world, settings, PromptsConfig(prompts=[SPEC]), metrics)
    assert scheduler.stop(timeout=GRACE_S)
    scheduler.run_once()
    scheduler.shadow_once()
    assert runs(world) == []
    assert sum(llm_server.requests.values()) == 0


# --- the process ------------------------------------------------------------------------------


def stalled_sidecar(
    kafka_bootstrap: str,
    topics: Topics,
    sqlite_url: str,
    server: LlmServer,
    start_sidecar: Start,
    directory: Path,
) -> Sidecar:
    """`gepa-sidecar run` with SHUTDOWN_GRACE_S=GRACE_S, its optimize run waiting on a
    reflection the model will not answer."""
    stall(server, "reflection", answered=1)
    env = sidecar_env(kafka_bootstrap, topics, sqlite_url)
    env.update(world_environment(server, directory))
    env.update(
        SIDECAR_OPTIMIZE_SCHEDULE="1",
        SIDECAR_SHADOW_SCHEDULE="3600",
        SIDECAR_SHUTDOWN_GRACE_S=str(GRACE_S),
        SIDECAR_PUBLISH_DIR=str(directory / "published"),
    )
    sidecar = start_sidecar(env)
    wait_until(lambda: server.requests["hang"] == 1, 120, "the run to wait on the model")
    return sidecar


def sigterm_ends_within_the_grace(sidecar: Sidecar) -> None:
    """SIGTERM, and the process exits 0 within the grace (plus the margin for a busy machine)."""
    signalled = time.monotonic()
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=GRACE_S + EXIT_MARGIN_S) == 0
    assert time.monotonic() - signalled < GRACE_S + EXIT_MARGIN_S


def test_sigterm_ends_the_process_within_the_grace_and_the_run_is_interrupted(
    kafka_bootstrap: str,
    topics: Topics,
    sqlite_url: str,
    world: Engine,
    llm_server: LlmServer,
    start_sidecar: Start,
    tmp_path: Path,
) -> None:
    sidecar = stalled_sidecar(
        kafka_bootstrap, topics, sqlite_url, llm_server, start_sidecar, tmp_path
    )
    sigterm_ends_within_the_grace(sidecar)
    log = sidecar.log.read_text()
    assert "interrupted" in log
    assert "abandoning" not in log  # the run was cut and recorded, not left behind
    assert_interrupted_and_kept(world)


def test_what_cannot_stop_in_time_is_abandoned_named_and_the_process_still_exits(
    kafka_bootstrap: str,
    topics: Topics,
    sqlite_url: str,
    world: Engine,
    llm_server: LlmServer,
    start_sidecar: Start,
    tmp_path: Path,
) -> None:
    sidecar = stalled_sidecar(
        kafka_bootstrap, topics, sqlite_url, llm_server, start_sidecar, tmp_path
    )
    # The run cannot record its end: every write waits for this lock (SQLite's 30 s timeout).
    locker = sqlite3.connect(str(make_url(sqlite_url).database), isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        sigterm_ends_within_the_grace(sidecar)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    abandoned = [line for line in sidecar.log.read_text().splitlines() if "abandoning" in line]
    assert len(abandoned) == 1
    assert "scheduler" in abandoned[0]
    assert [run.status for run in runs(world)] == ["running"]  # the next start marks it failed
