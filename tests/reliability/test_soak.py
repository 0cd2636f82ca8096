"""R6, a soak: `gepa-sidecar run` fed at a steady rate for minutes with judging on (our LLM
server as the judge). A sidecar lives as long as the pod beside it, so memory that grows with
traffic, a consumer that falls further behind, or an error logged now and then would each end
in a restart or a stale prompt. Measured: the resident memory of the process and of its ingest
writer child after a warm-up and at the end, the consumer lag it exports all along, its log."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from sidecar.store.database import create_database_engine
from sidecar.store.repository import status_summary, stored_event_ids
from tests.conftest import Topics
from tests.helpers import encode, make_event, scaled, wait_until
from tests.integration.test_crash import writer_pid
from tests.llm_server import LlmServer
from tests.processes import Sidecar, Start, sidecar_env
from tests.reliability.rows import Row, record, sized
from tests.world import world_environment

RATE = 25  # events a second, steady
WARM_UP_S = sized(ci=6, full=60)
SOAK_S = sized(ci=20, full=600)
RSS_GROWTH = 0.10  # the goal: at most 10% more resident memory at the end than after warm-up
LAG_BOUND = RATE * 10  # never more than ten seconds of traffic behind
LAG = "gepa_sidecar_consumer_lag_records"


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    made = create_database_engine(sqlite_url)
    yield made
    made.dispose()


def rss_kib(pid: int) -> int:
    """VmRSS of a live process, in KiB, as the kernel counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"process {pid} has no VmRSS")


def lag(sidecar: Sidecar, topic: str) -> float | None:
    """The lag the sidecar exports for `topic`, summed over its partitions (None before the
    first position check)."""
    page = httpx.get(f"{sidecar.base_url}/metrics", timeout=scaled(10)).text
    found = [
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == LAG and sample.labels.get("topic") == topic
    ]
    return sum(found) if found else None


class SteadyTraffic:
    """RATE events a second onto the topic, paced by the clock, each kept for the checks."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.topic = topic
        self.rng = random.Random(6)
        self.sent: list[str] = []

    def run_for(self, seconds: float, sidecar: Sidecar, lags: list[float]) -> None:
        """Send for `seconds`; after each second's events, read the sidecar's lag."""
        start = time.monotonic()
        for tick in range(int(seconds)):
            for _ in range(RATE):
                event = make_event(self.rng)
                self.producer.send(self.topic, key=event["event_id"].encode(), value=encode(event))
                self.sent.append(event["event_id"])
            self.producer.flush()
            found = lag(sidecar, self.topic)
            if found is not None:
                lags.append(found)
            time.sleep(max(0.0, start + tick + 1 - time.monotonic()))  # pacing, not a wait

    def close(self) -> None:
        self.producer.close()


def judged(engine: Engine) -> int:
    return status_summary(engine)["events"]["judged"]


def test_a_steady_stream_for_minutes_keeps_memory_lag_and_log_flat(
    kafka_bootstrap: str,
    topics: Topics,
    sqlite_url: str,
    engine: Engine,
    llm_server: LlmServer,
    start_sidecar: Start,
    tmp_path: Path,
) -> None:
    env = sidecar_env(kafka_bootstrap, topics, sqlite_url)
    env.update(world_environment(llm_server, tmp_path))
    env.update(
        SIDECAR_OPTIMIZE_SCHEDULE="86400",
        SIDECAR_SHADOW_SCHEDULE="86400",
        SIDECAR_PUBLISH_DIR=str(tmp_path / "published"),
        SIDECAR_JUDGE_POLL_INTERVAL_S="0.2",
    )
    sidecar = start_sidecar(env)
    wait_until(lambda: sidecar.metric("gepa_sidecar_ingest_paused") is not None, 60, "/metrics")
    wait_until(lambda: writer_pid(sidecar.process.pid) is not None, 60, "the ingest writer")
    writer = writer_pid(sidecar.process.pid)
    assert writer is not None
    traffic = SteadyTraffic(kafka_bootstrap, topics.traffic)
    lags: list[float] = []
    try:
        traffic.run_for(WARM_UP_S, sidecar, [])
        wait_until(lambda: judged(engine) > 0, 60, "the first judgments")
        before = {"sidecar": rss_kib(sidecar.process.pid), "writer": rss_kib(writer)}
        traffic.run_for(SOAK_S, sidecar, lags)
        after = {"sidecar": rss_kib(sidecar.process.pid), "writer": rss_kib(writer)}
    finally:
        traffic.close()
    total = len(traffic.sent)
    wait_until(lambda: judged(engine) >= total, 120, f"{total} events judged")
    ids = stored_event_ids(engine)
    summary = status_summary(engine)["events"]
    sidecar.process.send_signal(signal.SIGTERM)
    exit_code = sidecar.process.wait(timeout=scaled(60))
    log = sidecar.log.read_text()
    troubles = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line]

    growth = {name: after[name] / before[name] - 1 for name in before}
    lost = len(set(traffic.sent) - set(ids))
    duplicated = len(ids) - len(set(ids))
    passed = (
        max(growth.values()) <= RSS_GROWTH
        and bool(lags)
        and max(lags) <= LAG_BOUND
        and not troubles
        and lost == duplicated == 0
        and summary["judged"] == total
        and exit_code == 0
    )
    record(
        Row(
            row="R6",
            test="test_a_steady_stream_for_minutes_keeps_memory_lag_and_log_flat",
            load=f"{RATE} events/s for {SOAK_S} s after a {WARM_UP_S} s warm-up "
            f"({total} events), judged by the test LLM server, SQLite",
            faults="none (a soak)",
            goal=f"RSS growth <= {RSS_GROWTH:.0%} (sidecar and writer), consumer lag <= "
            f"{LAG_BOUND} records throughout, no ERROR/Traceback logged",
            result=f"RSS sidecar {before['sidecar'] // 1024}->{after['sidecar'] // 1024} MiB "
            f"({growth['sidecar']:+.1%}), writer {before['writer'] // 1024}->"
            f"{after['writer'] // 1024} MiB ({growth['writer']:+.1%}); lag max "
            f"{max(lags, default=-1):.0f} over {len(lags)} reads; {len(troubles)} error lines; "
            f"{summary['judged']}/{total} judged; exit {exit_code}",
            passed=passed,
            lost=lost,
            duplicated=duplicated,
        )
    )
    assert lost == duplicated == 0
    assert summary["judged"] == total and summary["judge_errors"] == 0
    assert troubles == []
    assert lags, "the sidecar never exported its lag"
    assert max(lags) <= LAG_BOUND, lags
    assert max(growth.values()) <= RSS_GROWTH, (before, after)
    assert exit_code == 0
