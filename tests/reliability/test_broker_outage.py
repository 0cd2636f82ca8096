"""R3: the broker stops and comes back empty (the embedded broker keeps nothing), while an app
keeps emitting through the SDK's TrafficEmitter and a `gepa-sidecar run` child keeps running.

Builds on tests/integration/test_outages.py::test_broker_restart_is_survived (an in-process
consumer, ingest only): here the whole sidecar is a child that is never restarted, it judges
what it stores, and the app's emitter is measured. An operator recreates the topics once the
broker is back. What the emitter acknowledged is stored and judged once; what it did not is
counted as dropped, never silently lost; no emit() call blocks the app.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from sidecar.client import TrafficEmitter
from sidecar.runtime.broker import EmbeddedBroker, free_port
from sidecar.runtime.kafka import ensure_topics
from tests.conftest import Topics
from tests.helpers import scaled, wait_until
from tests.integration.test_run_observability import NAME, run_env
from tests.llm_server import LlmServer
from tests.processes import Sidecar, Start
from tests.reliability.rows import Row, record, sized

MAX_BLOCK_MS = 2_000
REQUEST_TIMEOUT_MS = 500
DELIVERY_TIMEOUT_MS = 1_000
"""Short, so that sends in flight when the broker stops fail (and are counted) within a CI-sized
outage; production keeps the emitter's defaults."""
QUEUE_SIZE = 1_000
"""Holds a steady burst (full size: 200); a full-sized outage (6,000 requests) overflows it."""
EMIT_PAUSE_S = 0.01  # the app's pace: about 100 requests a second


class App:
    """A serving app that emits one event per request and times every emit() call."""

    def __init__(self, emitter: TrafficEmitter) -> None:
        self.emitter = emitter
        self.emitted: Counter[str] = Counter()
        self.slowest_s = 0.0

    def request(self, phase: str) -> None:
        index = self.emitted[phase]
        began = time.perf_counter()
        self.emitter.emit({"user_message": f"{phase} {index}"}, "Next step: we ship it.", 1)
        self.slowest_s = max(self.slowest_s, time.perf_counter() - began)
        self.emitted[phase] += 1

    def serve(self, phase: str, count: int) -> None:
        for _ in range(count):
            self.request(phase)

    def serve_for(self, phase: str, seconds: float) -> None:
        """Requests at the app's pace for `seconds` (the outage's length: the fault, not a wait)."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.request(phase)
            time.sleep(EMIT_PAUSE_S)

    def serve_until(self, phase: str, done: Callable[[], bool], what: str) -> None:
        """Requests at wait_until's pace until `done()`: the app does not wait for the broker."""
        wait_until(lambda: self.request(phase) or done(), 120, what)

    def settled(self) -> bool:
        """Every emitted event acknowledged or counted as dropped."""
        return self.emitter.sent + self.emitter.dropped == sum(self.emitted.values())


def stored_and_judged(engine: Engine) -> tuple[Counter[str], Counter[str]]:
    """Per phase, the events stored and those of them judged ok."""
    query = text(
        "SELECT e.inputs, MAX(CASE WHEN j.status = 'ok' THEN 1 ELSE 0 END) FROM events e "
        "LEFT JOIN judgments j ON j.event_row_id = e.id GROUP BY e.id, e.inputs"
    )
    stored: Counter[str] = Counter()
    judged: Counter[str] = Counter()
    with engine.connect() as connection:
        for inputs, ok in connection.execute(query):
            found = json.loads(inputs) if isinstance(inputs, str) else inputs
            phase = found["user_message"].split(" ", 1)[0]
            stored[phase] += 1
            judged[phase] += int(ok)
    return stored, judged


@dataclass
class Outage:
    """The pieces of the scenario: a broker on a fixed port (so that it can come back where the
    clients look for it), a sidecar child on it, and the app's emitter."""

    port: int
    broker: EmbeddedBroker
    topics: list[str]
    engine: Engine
    sidecar: Sidecar
    app: App

    def restart_broker(self, outage_s: float) -> None:
        """Stop the broker, let the app serve through the outage, start it again empty and
        recreate the topics, as an operator would."""
        self.broker.stop()
        self.app.serve_for("outage", outage_s)
        self.broker = EmbeddedBroker(port=self.port).start()
        ensure_topics(self.broker.bootstrap_servers, self.topics, partitions=2)

    def health(self) -> str:
        if self.sidecar.process.poll() is not None:
            return "DIED"
        url = f"{self.sidecar.base_url}/healthz"
        return str(httpx.get(url, timeout=scaled(10)).json()["status"])


@pytest.fixture
def outage(
    tmp_path: Path,
    start_sidecar: Start,
    llm_server: LlmServer,
    migrated_engine: Callable[[str], Engine],
) -> Iterator[Outage]:
    port = free_port()
    name = f"r3-{time.monotonic_ns()}"
    topics = Topics(name, f"{name}.dlq", f"{name}-group")
    every_topic = [topics.traffic, topics.dlq, f"{topics.traffic}.prompts"]
    broker = EmbeddedBroker(port=port).start()
    made: Outage | None = None
    try:
        ensure_topics(broker.bootstrap_servers, every_topic, partitions=2)
        env = run_env(
            broker.bootstrap_servers, topics, tmp_path, SIDECAR_JUDGE_API_BASE=llm_server.api_base
        )
        env["SIDECAR_PUBLISH_TARGETS"] = "file,http"
        engine = migrated_engine(env["SIDECAR_DATABASE_URL"])
        sidecar = start_sidecar(env)
        emitter = TrafficEmitter(
            broker.bootstrap_servers,
            topics.traffic,
            prompt_name=NAME,
            queue_size=QUEUE_SIZE,
            max_block_ms=MAX_BLOCK_MS,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
        )
        made = Outage(port, broker, every_topic, engine, sidecar, App(emitter))
        yield made
        emitter.close()
    finally:
        (made.broker if made else broker).stop()


def test_broker_outage_is_survived_and_the_emitter_never_blocks(outage: Outage) -> None:
    steady, outage_s = sized(ci=20, full=200), sized(ci=4, full=60)
    app, engine = outage.app, outage.engine
    app.serve("before", steady)
    with contextlib.suppress(AssertionError):  # a timeout is reported by the row and asserts
        wait_until(lambda: stored_and_judged(engine)[1]["before"] == steady, 60, "before judged")
    outage.restart_broker(outage_s)
    restarted = time.monotonic()
    with contextlib.suppress(AssertionError):  # a timeout is reported by the row and asserts
        app.serve_until(
            "after",
            lambda: stored_and_judged(engine)[0]["after"] >= steady,
            f"{steady} events emitted after the restart stored",
        )
        wait_until(app.settled, 60, "every emitted event acknowledged or counted as dropped")
    recovered_s = time.monotonic() - restarted
    sent, drops = app.emitter.sent, app.emitter.dropped_by_reason
    with contextlib.suppress(AssertionError):  # a timeout is reported by the row and asserts
        wait_until(lambda: sum(stored_and_judged(engine)[1].values()) >= sent, 120, "judged")
    stored, judged = stored_and_judged(engine)
    health = outage.health()
    lost = sent - sum(stored.values())
    bound_s = MAX_BLOCK_MS / 1000 / 4
    emitted = sum(app.emitted.values())
    record(
        Row(
            row="R3",
            test="test_broker_outage_is_survived_and_the_emitter_never_blocks",
            load=f"an app emitting {emitted} events through TrafficEmitter "
            f"(~{1 / EMIT_PAUSE_S:.0f}/s during the outage) to a `gepa-sidecar run` child",
            faults=f"broker stopped {outage_s} s, restarted empty, topics recreated",
            goal="the sidecar recovers by itself; emit() never blocks; drops are counted",
            result=f"sidecar never restarted, /healthz {health}; {sum(stored.values())}/{sent} "
            f"acknowledged stored, {sum(judged.values())} judged ({stored['after']} of "
            f"{app.emitted['after']} emitted after the restart, in {recovered_s:.1f} s); "
            f"slowest emit() {app.slowest_s * 1000:.2f} ms (max_block_ms {MAX_BLOCK_MS}); "
            f"dropped and counted: {drops}",
            passed=health == "ok"
            and lost == 0
            and judged == stored
            and app.slowest_s < bound_s
            and sent + sum(drops.values()) == emitted,
            lost=lost,
            duplicated=0,
        )
    )
    assert health == "ok", outage.sidecar.log.read_text()[-3000:]
    assert app.slowest_s < bound_s, f"an emit() call took {app.slowest_s:.3f}s"
    assert sent + sum(drops.values()) == emitted, drops
    assert sum(drops.values()) > 0, "the outage outlasted the delivery timeout: drops expected"
    assert stored["before"] == steady and stored["after"] >= steady
    assert sum(stored.values()) == sent
    assert judged == stored
