"""The HTTP API on a real uvicorn server (port 0) reached with httpx, and a whole App."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from sidecar.api.app import create_api
from sidecar.errors import ConfigError
from sidecar.metrics import MAX_PROMPT_LABELS, OVERFLOW_LABEL, UNKNOWN_PROMPT, Metrics
from sidecar.runtime.app import App
from sidecar.runtime.http import HttpServer
from sidecar.store.candidates import insert_candidate
from sidecar.store.repository import seed_prompt
from tests import helpers
from tests.conftest import Topics

CONSUMED = "gepa_sidecar_events_consumed"


@dataclass
class Checks:
    """A Readiness whose answers the test sets."""

    values: dict[str, bool] = field(default_factory=lambda: {"database": True, "consumer": True})

    def readiness(self) -> dict[str, bool]:
        return dict(self.values)


@dataclass
class Served:
    checks: Checks
    metrics: Metrics
    client: httpx.Client


@pytest.fixture
def served() -> Iterator[Served]:
    checks, metrics = Checks(), Metrics()
    server = HttpServer(create_api(checks, metrics.registry), "127.0.0.1", 0).start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{server.port}", timeout=helpers.scaled(10)
        ) as client:
            yield Served(checks, metrics, client)
    finally:
        server.stop()


def consumed_samples(text: str) -> dict[tuple[str, str], float]:
    """`events_consumed_total` samples by (prompt, outcome)."""
    for family in text_string_to_metric_families(text):
        if family.name == CONSUMED:
            return {
                (s.labels["prompt"], s.labels["outcome"]): s.value
                for s in family.samples
                if s.name == CONSUMED + "_total"
            }
    return {}


def test_healthz(served: Served) -> None:
    response = served.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_follows_the_checks_live(served: Served) -> None:
    ready = served.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "consumer": True}

    served.checks.values["consumer"] = False
    not_ready = served.client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"] == {"database": True, "consumer": False}

    served.checks.values = {"database": False, "consumer": True}
    assert served.client.get("/readyz").json()["checks"]["database"] is False
    assert served.client.get("/readyz").status_code == 503

    served.checks.values = {"database": True, "consumer": True}
    assert served.client.get("/readyz").status_code == 200


def test_metrics_is_prometheus_exposition(served: Served) -> None:
    served.metrics.count_outcomes(
        {("customer-care", "accepted"): 3, ("customer-care", "invalid"): 0}
    )
    response = served.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "gepa_sidecar_events_consumed_total" in response.text
    assert consumed_samples(response.text) == {("customer-care", "accepted"): 3.0}


def test_prompt_labels_are_bounded() -> None:
    metrics = Metrics()
    assert metrics.prompt_label("") == UNKNOWN_PROMPT
    assert metrics.prompt_label(None) == UNKNOWN_PROMPT
    names = [f"prompt-{i}" for i in range(MAX_PROMPT_LABELS)]
    assert [metrics.prompt_label(name) for name in names] == names
    assert metrics.prompt_label("one-too-many") == OVERFLOW_LABEL
    assert metrics.prompt_label("prompt-0") == "prompt-0"
    assert metrics.prompt_label("one-too-many") == OVERFLOW_LABEL


def test_a_port_in_use_is_a_config_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(create_api(Checks(), Metrics().registry), "127.0.0.1", port)
        with pytest.raises(ConfigError, match="SIDECAR_HTTP_PORT") as raised:
            server.start()
    assert str(port) in str(raised.value)


def test_app_consumes_and_counts(kafka_bootstrap: str, topics: Topics, sqlite_url: str) -> None:
    app = App(helpers.sidecar_settings(kafka_bootstrap, topics, sqlite_url))
    thread = threading.Thread(target=app.run, name="app-under-test", daemon=True)
    thread.start()
    try:
        helpers.wait_until(lambda: app.http is not None, 30, "the HTTP server")
        assert app.http is not None
        with httpx.Client(
            base_url=f"http://127.0.0.1:{app.http.port}", timeout=helpers.scaled(10)
        ) as client:
            helpers.wait_until(lambda: client.get("/readyz").status_code == 200, 60, "/readyz 200")
            rng = random.Random(20)
            events = [helpers.make_event(rng) for _ in range(20)]
            keys = [event["event_id"].encode() for event in events]
            helpers.produce(kafka_bootstrap, topics.traffic, map(helpers.encode, events), keys)

            def accepted() -> float:
                samples = consumed_samples(client.get("/metrics").text)
                return samples.get(("customer-care", "accepted"), 0.0)

            helpers.wait_until(lambda: accepted() == 20, 60, "20 accepted events in /metrics")

            def lag() -> dict[str, float]:
                families = text_string_to_metric_families(client.get("/metrics").text)
                return {
                    sample.labels["partition"]: sample.value
                    for family in families
                    if family.name == "gepa_sidecar_consumer_lag_records"
                    for sample in family.samples
                    if sample.labels["topic"] == topics.traffic
                }

            helpers.wait_until(lambda: lag() == {"0": 0.0, "1": 0.0}, 30, "zero lag per partition")
    finally:
        app.stop()
        thread.join(timeout=helpers.scaled(30))
    assert not thread.is_alive()


def test_candidates_and_versions_are_served_with_their_flags(
    database_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine = migrated_engine(database_url)
    now = datetime.now(UTC)
    seed_prompt(engine, "customer-care", {"system_prompt": "Help."}, now)
    flag = "copies user text into system_prompt: 'my account number is 99812-771 and my mother'"
    insert_candidate(
        engine, "customer-care", {"system_prompt": "Help more."}, [1], None, "x", [flag], now
    )
    server = HttpServer(create_api(Checks(), Metrics().registry, engine), "127.0.0.1", 0).start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{server.port}", timeout=helpers.scaled(10)
        ) as client:
            listed = client.get("/v1/prompts/customer-care/candidates").json()
            assert [(c["version"], c["status"]) for c in listed] == [(1, "active"), (2, "pool")]
            pooled = client.get("/v1/prompts/customer-care/candidates", params={"status": "pool"})
            assert [c["version"] for c in pooled.json()] == [2]
            shown = client.get("/v1/prompts/customer-care/versions/2").json()
            assert shown["flags"] == [flag] and shown["parents"] == [1]
            assert client.get("/v1/prompts/customer-care/versions/9").status_code == 404
            missing = client.get("/v1/prompts/nope/candidates")
            assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    finally:
        server.stop()
