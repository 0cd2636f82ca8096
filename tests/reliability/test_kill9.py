"""R2: `gepa-sidecar run` killed with SIGKILL again and again, at four kinds of point, and
restarted each time on the same database and consumer group, loses nothing, stores and judges
nothing twice, publishes each approval once per target and leaves a consistent candidate pool.

The points are chosen by observable progress, never by time: a seeded RNG picks N, and the kill
lands once the store shows N more events stored (ingest), N more judged (judging), a run row
`running` with N reflections asked since the round began (a GEPA run), or an approval committed
and, by the RNG's choice, its Kafka delivery not yet begun or begun (between approval and
publish). Where the kill actually landed (with work left, or after it) is counted, not assumed:
the guarantees must hold either way, so the test never depends on the machine's speed.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select, update

from sidecar.promote.publishers import FilePublisher
from sidecar.store.candidates import candidates_of
from sidecar.store.database import create_database_engine
from sidecar.store.outbox import pending_outbox
from sidecar.store.repository import ingest_totals, seed_prompt, stored_event_ids, transaction
from sidecar.store.tables import Candidate, OutboxEntry
from tests.conftest import Topics
from tests.helpers import activations, encode, make_event, produce, scaled, wait_until
from tests.integration.test_crash import _stored, alive, writer_pid, writes_blocked
from tests.llm_server import LlmServer
from tests.processes import Sidecar, Start, sidecar_env
from tests.reliability.consistency import (
    judged_ok,
    judgments_per_event,
    pool_problems,
    run_statuses,
)
from tests.reliability.rows import Row, record, scale, sized
from tests.versions import add_version, approved
from tests.world import SPEC, world_environment

KILLS = sized(ci=4, full=24)  # one round per kill, the kinds in turn
BATCH = sized(ci=60, full=150)  # events produced in each judging round, at most stored first
TAIL = 80  # produced while the writer is stalled: more than the consumer holds before pausing
NAME = SPEC.name
DATABASES = ["sqlite", "postgresql"] if scale() == "full" else ["sqlite"]  # CI: the quicker one
REFLECT = "reflection"  # the simulated server's count of reflection requests
UNANSWERABLE = ("Hi?", "Hey?", "Why so?")
"""Messages without a word the judge can see echoed: no prompt scores 1.0 on them, so every
GEPA run keeps reflecting (it would stop at once on a perfect frontier) and a kill finds one."""


@dataclass
class Campaign:
    """One database, one consumer group, one publish directory, killed round after round."""

    bootstrap: str
    topics: Topics
    engine: Engine
    server: LlmServer
    start_sidecar: Start
    env: dict[str, str]
    published: Path
    rng: random.Random
    produced: list[str] = field(default_factory=list)
    approvals: list[tuple[int, int]] = field(default_factory=list)
    landed: Counter[str] = field(default_factory=Counter)  # kills that left work undone
    killed: Counter[str] = field(default_factory=Counter)

    def start(self, **settings: str) -> Sidecar:
        return self.start_sidecar({**self.env, **settings})

    def produce(self, n: int) -> None:
        events = [
            make_event(self.rng, inputs={"user_message": self.rng.choice(UNANSWERABLE)})
            for _ in range(n)
        ]
        produce(self.bootstrap, self.topics.traffic, [encode(e) for e in events])
        self.produced.extend(e["event_id"] for e in events)

    def kill(self, sidecar: Sidecar, kind: str, undone: Callable[[], bool]) -> int | None:
        """SIGKILL, count whether the kill left work of its kind undone, and return the ingest
        writer the process leaves orphaned (it may finish its batch: the duplicate a restart
        must not store)."""
        writer = writer_pid(sidecar.process.pid)
        sidecar.process.send_signal(signal.SIGKILL)
        sidecar.process.wait(timeout=scaled(10))
        self.killed[kind] += 1
        self.landed[kind] += undone()
        return writer


def reap(writer: int | None) -> None:
    if writer is not None:
        wait_until(lambda: not alive(writer), 30, "the orphaned writer to exit")


def ingest_round(campaign: Campaign) -> None:
    """Let N events be stored, stall the writer, produce TAIL more, and kill once the consumer
    has paused holding fetched records it could not store."""
    engine = campaign.engine
    target = _stored(engine) + campaign.rng.randint(1, BATCH)
    campaign.produce(target - _stored(engine))
    sidecar = campaign.start()
    wait_until(lambda: _stored(engine) >= target, 120, f"{target} events stored")
    with writes_blocked(campaign.env["SIDECAR_DATABASE_URL"], engine):
        campaign.produce(TAIL)
        wait_until(sidecar.paused, 60, "the consumer to pause behind the stalled writer")
        writer = campaign.kill(sidecar, "ingest", lambda: _stored(engine) < len(campaign.produced))
    reap(writer)


def judging_round(campaign: Campaign) -> None:
    engine = campaign.engine
    before = judged_ok(engine)
    campaign.produce(BATCH)
    sidecar = campaign.start()
    target = before + campaign.rng.randint(1, BATCH - 1)
    wait_until(lambda: judged_ok(engine) >= target, 120, f"{target} events judged")
    reap(campaign.kill(sidecar, "judging", lambda: judged_ok(engine) < len(campaign.produced)))


def running(engine: Engine, after: int = 0) -> list[int]:
    """Runs left `running`, newer than run `after` (a killed run stays so until the next)."""
    statuses = run_statuses(engine).items()
    return [run for run, status in statuses if status == "running" and run > after]


def last_run(engine: Engine) -> int:
    return max(run_statuses(engine), default=0)


def gepa_round(campaign: Campaign) -> None:
    before, asked = last_run(campaign.engine), campaign.server.kinds[REFLECT]
    sidecar = campaign.start(SIDECAR_OPTIMIZE_SCHEDULE="1")
    target = asked + campaign.rng.randint(1, 3)

    def in_flight() -> bool:
        return bool(running(campaign.engine, before)) and campaign.server.kinds[REFLECT] >= target

    wait_until(in_flight, 180, f"a run in flight after {target - asked} reflections")
    reap(campaign.kill(sidecar, "gepa", lambda: bool(running(campaign.engine, before))))


def kafka_attempted(engine: Engine, activation: int) -> bool:
    query = select(OutboxEntry.attempts).where(
        OutboxEntry.activation_id == activation,  # type: ignore[arg-type]
        OutboxEntry.target == "kafka",  # type: ignore[arg-type]
    )
    with transaction(engine) as connection:
        return int(connection.execute(query).scalar_one()) > 0


def publish_round(campaign: Campaign) -> None:
    """Approve a gated version as another client would, and kill before the relay began
    delivering it (it polls once an hour, and has made its start-up tick) or once it began
    delivering it to Kafka."""
    attempted = campaign.rng.random() < 0.5
    interval = "1" if attempted else "3600"
    sidecar = campaign.start(SIDECAR_PUBLISH_POLL_INTERVAL_S=interval)
    wait_until(lambda: ready(sidecar), 120, "the sidecar ready (its start-up tick made)")
    version = add_version(campaign.engine, "awaiting_approval", name=NAME)
    activation = approved(campaign.engine, version, name=NAME).id
    campaign.approvals.append((version, activation))
    if attempted:
        wait_until(lambda: kafka_attempted(campaign.engine, activation), 60, "a Kafka delivery")
    reap(campaign.kill(sidecar, "publish", lambda: bool(pending_outbox(campaign.engine))))


def ready(sidecar: Sidecar) -> bool:
    try:
        return httpx.get(f"{sidecar.base_url}/readyz", timeout=scaled(5)).status_code == 200
    except (AssertionError, httpx.HTTPError):  # not serving yet
        return False


ROUNDS: dict[str, Callable[[Campaign], None]] = {
    "ingest": ingest_round,
    "judging": judging_round,
    "gepa": gepa_round,
    "publish": publish_round,
}
KINDS = tuple(ROUNDS)


def settle(campaign: Campaign) -> None:
    """A last, unkilled process: every event stored and judged, every delivery made, and a run
    started after the killed ones (which it marks failed); then SIGTERM."""
    before = last_run(campaign.engine)
    sidecar = campaign.start(SIDECAR_OPTIMIZE_SCHEDULE="1")
    total = len(campaign.produced)
    wait_until(lambda: _stored(campaign.engine) >= total, 120, "every event stored")
    wait_until(lambda: judged_ok(campaign.engine) >= total, 120, "every event judged")
    wait_until(lambda: not pending_outbox(campaign.engine), 60, "every delivery made")
    wait_until(lambda: last_run(campaign.engine) > before, 120, "a run after the killed ones")
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=scaled(60)) == 0


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
def test_kill_9_at_random_points_loses_nothing_and_does_nothing_twice(
    kafka_bootstrap: str,
    topics: Topics,
    database_url: str,
    llm_server: LlmServer,
    start_sidecar: Start,
    tmp_path: Path,
) -> None:
    llm_server.latency_s = 0.02  # a judge that takes a moment, so some kills land mid-batch
    published = tmp_path / "published"
    env = sidecar_env(kafka_bootstrap, topics, database_url)
    env.update(world_environment(llm_server, tmp_path))
    env.update(
        SIDECAR_PUBLISH_DIR=str(published),
        SIDECAR_JUDGE_CONCURRENCY="2",
        SIDECAR_INGEST_QUEUE_BATCHES="1",
        SIDECAR_OPTIMIZE_SCHEDULE="3600",
        SIDECAR_SHADOW_SCHEDULE="3600",
        SIDECAR_RUN_MAX_METRIC_CALLS="60",
    )
    engine = create_database_engine(database_url)
    campaign = Campaign(
        kafka_bootstrap, topics, engine, llm_server, start_sidecar, env, published,
        random.Random(20261128),
    )  # fmt: skip
    try:
        for index in range(KILLS):
            kind = KINDS[index % len(KINDS)]
            ROUNDS[kind](campaign)
        settle(campaign)
        assert_nothing_lost_or_twice(campaign)
    finally:
        engine.dispose()


def assert_nothing_lost_or_twice(campaign: Campaign) -> None:
    engine = campaign.engine
    stored = stored_event_ids(engine)
    per_event = judgments_per_event(engine)
    topic = campaign.env["SIDECAR_PROMPTS_TOPIC"]
    delivered = activations(campaign.bootstrap, topic)
    versions = candidates_of(engine, NAME)
    [active] = [v for v, row in versions.items() if row.status == "active"]
    held = FilePublisher(campaign.published).current(NAME)
    problems = pool_problems(engine, NAME)
    killed_runs = [r for r, status in run_statuses(engine).items() if status == "failed"]

    lost = (
        len(set(campaign.produced) - set(stored))
        + sum(1 for n in per_event.values() if n == 0)
        + len(set(campaign.approvals) - set(delivered))
    )
    duplicated = (
        len(stored) - len(set(stored))
        + sum(n - 1 for n in per_event.values() if n > 1)
        + len(delivered) - len(set(delivered))
    )  # fmt: skip
    landed = ", ".join(f"{kind} {campaign.landed[kind]}/{campaign.killed[kind]}" for kind in KINDS)
    passed = (
        lost == duplicated == 0
        and delivered == campaign.approvals
        and held is not None
        and held.version == active
        and not problems
        and ingest_totals(engine)["accepted"] == len(campaign.produced)
    )
    record(
        Row(
            row="R2",
            test="test_kill_9_at_random_points_loses_nothing_and_does_nothing_twice"
            f"[{engine.dialect.name}]",  # a row for each database
            load=f"{len(campaign.produced)} events, {len(campaign.approvals)} approvals, "
            f"{sum(campaign.killed.values())} restarts on one {engine.dialect.name} store and "
            "consumer group",
            faults=f"{sum(campaign.killed.values())} kill -9 of the sidecar ({landed} landed "
            "with work of their kind left undone)",
            goal="0 lost, 0 duplicated, each approval published once per target, pool consistent",
            result=f"{len(set(stored))} of {len(campaign.produced)} events stored, each judged "
            f"once; {len(delivered)} of {len(campaign.approvals)} approvals on the topic, the "
            f"file at v{held.version if held else None} (active v{active}); "
            f"{len(killed_runs)} killed runs marked failed; pool problems: {problems or 'none'}",
            passed=passed,
            lost=lost,
            duplicated=duplicated,
        )
    )
    assert (lost, duplicated) == (0, 0)
    assert sorted(stored) == sorted(campaign.produced)
    assert set(per_event.values()) == {1}
    assert delivered == campaign.approvals
    assert held is not None and held.version == active == campaign.approvals[-1][0]
    assert problems == []
    assert ingest_totals(engine)["accepted"] == len(campaign.produced)
    assert not running(engine)


def test_the_pool_check_names_what_a_half_written_candidate_breaks(
    sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    """The checker itself can fail: a version written without its audit row, active beside the
    seed, bred from a parent that does not exist, is named three times over."""
    engine = migrated_engine(sqlite_url)
    seed_prompt(engine, NAME, dict(SPEC.seed), datetime.now(UTC))
    version = add_version(engine, "awaiting_approval", name=NAME)
    assert pool_problems(engine, NAME) == []
    with transaction(engine) as connection:
        connection.execute(
            update(Candidate)
            .where(Candidate.version == version)  # type: ignore[arg-type]
            .values(status="active", parents=[99])
        )
    assert pool_problems(engine, NAME) == [
        f"2 active versions: [1, {version}]",
        f"v{version} has parents that do not exist: [99]",
        f"v{version} is active but its audit trail ends at awaiting_approval",
    ]
