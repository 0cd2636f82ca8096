"""The HTTP server (port 0, reached with httpx): liveness, readiness, metrics, the served prompt
document with its ETag and 304, the OpenAPI contract and /docs, and a whole App. The store-backed
routes and decisions are in test_api.py."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from sidecar.api.app import create_api
from sidecar.api.models import Liveness
from sidecar.errors import ConfigError
from sidecar.events import PromptDocument
from sidecar.metrics import UNMANAGED_PROMPT, Metrics
from sidecar.promote.served import ServedDocuments
from sidecar.runtime.app import App
from sidecar.runtime.http import HttpServer
from tests import helpers
from tests.conftest import Topics

CONSUMED = "gepa_sidecar_events_consumed"
NAME = "customer-care"
ACTIVE = f"/v1/prompts/{NAME}/active"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass
class Checks:
    """Probes whose answers the test sets: `values` for /readyz, `workers` for /healthz."""

    values: dict[str, bool] = field(default_factory=lambda: {"prompts_published": True})
    workers: dict[str, bool] = field(default_factory=lambda: {"consumer": True, "judge": True})

    def readiness(self) -> dict[str, bool]:
        return dict(self.values)

    def liveness(self) -> Liveness:
        return Liveness(checks=dict(self.workers), detail={"database": {"reachable": False}})


@dataclass
class Served:
    checks: Checks
    metrics: Metrics
    client: httpx.Client


@contextmanager
def serving(
    engine: Engine | None,
    checks: Checks | None = None,
    registry: CollectorRegistry | None = None,
    **options: Any,
) -> Iterator[httpx.Client]:
    """`create_api(…, **options)` on a real server (port 0), and a client of it."""
    registry = registry or Metrics([NAME]).registry
    api = create_api(checks or Checks(), registry, engine, **options)
    server = HttpServer(api, "127.0.0.1", 0).start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{server.port}", timeout=helpers.scaled(10)
        ) as client:
            yield client
    finally:
        server.stop()


@pytest.fixture
def served() -> Iterator[Served]:
    checks, metrics = Checks(), Metrics([NAME])
    with serving(None, checks, registry=metrics.registry) as client:
        yield Served(checks, metrics, client)


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


def test_healthz_fails_only_on_its_checks_and_carries_the_detail(served: Served) -> None:
    response = served.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"consumer": True, "judge": True},
        "detail": {"database": {"reachable": False}},  # an outage is detail, not a failure
    }

    served.checks.workers["judge"] = False
    failing = served.client.get("/healthz")
    assert failing.status_code == 503
    assert failing.json()["status"] == "failing"
    assert failing.json()["checks"] == {"consumer": True, "judge": False}

    served.checks.workers["judge"] = True
    assert served.client.get("/healthz").status_code == 200


def test_readyz_follows_the_checks_live(served: Served) -> None:
    ready = served.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"prompts_published": True}}

    served.checks.values["prompts_published"] = False
    not_ready = served.client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json() == {"status": "not ready", "checks": {"prompts_published": False}}

    served.checks.values["prompts_published"] = True
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


def test_a_port_in_use_is_a_config_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(create_api(Checks(), Metrics([]).registry), "127.0.0.1", port)
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

            def accepted() -> float:  # no CONFIG_FILE: no prompt is managed
                samples = consumed_samples(client.get("/metrics").text)
                return samples.get((UNMANAGED_PROMPT, "accepted"), 0.0)

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


# --- the served document ----------------------------------------------------------------------


def document(version: int, text: str) -> PromptDocument:
    return PromptDocument.build(
        name=NAME, version=version, components={"system_prompt": text}, created_at=NOW
    )


@pytest.fixture
def documents() -> Iterator[tuple[ServedDocuments, httpx.Client]]:
    """A server of the documents this replica serves (no database: /active needs none)."""
    served = ServedDocuments()
    with serving(None, served=served) as client:
        yield served, client


def test_the_active_document_has_a_strong_etag_and_no_cache(
    documents: tuple[ServedDocuments, httpx.Client],
) -> None:
    served, client = documents
    missing = client.get(ACTIVE)
    assert missing.status_code == 404
    assert missing.json() == {
        "detail": f"nothing is served for {NAME!r} here: not published to this replica (yet)"
    }
    current = document(2, "Help.")
    served.publish(current, 7)
    response = client.get(ACTIVE)
    assert response.status_code == 200
    assert response.headers["ETag"] == f'"{current.sha256}"'
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["content-type"] == "application/json"
    assert PromptDocument.model_validate_json(response.content) == current


@pytest.mark.parametrize(
    ("if_none_match", "matches"),
    [
        ('"{sha}"', True),
        ('W/"{sha}"', True),
        ('"0000", "{sha}"', True),
        ('"0000",W/"{sha}",  "1111"', True),
        ("*", True),
        ('"0000"', False),
        ('"{sha}-gzip"', False),
        ('W/"0000", "1111"', False),
    ],
)
def test_if_none_match_gives_304_with_the_etag_and_no_body(
    documents: tuple[ServedDocuments, httpx.Client], if_none_match: str, matches: bool
) -> None:
    served, client = documents
    current = document(2, "Help.")
    served.publish(current, 7)
    header = if_none_match.format(sha=current.sha256)
    response = client.get(ACTIVE, headers={"If-None-Match": header})
    assert response.headers["ETag"] == f'"{current.sha256}"'
    assert response.headers["Cache-Control"] == "no-cache"
    if matches:
        assert (response.status_code, response.content) == (304, b"")
    else:
        assert response.status_code == 200
        assert PromptDocument.model_validate_json(response.content) == current


def test_an_old_etag_gets_the_new_document_once_it_changes(
    documents: tuple[ServedDocuments, httpx.Client],
) -> None:
    served, client = documents
    served.publish(document(2, "Help."), 7)
    old = client.get(ACTIVE).headers["ETag"]
    assert client.get(ACTIVE, headers={"If-None-Match": old}).status_code == 304
    rolled = document(3, "Help, kindly.")
    served.publish(rolled, 8)
    response = client.get(ACTIVE, headers={"If-None-Match": old})
    assert response.status_code == 200
    assert response.headers["ETag"] == f'"{rolled.sha256}"' != old
    assert PromptDocument.model_validate_json(response.content) == rolled
    again = client.get(ACTIVE, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


# --- the contract -----------------------------------------------------------------------------


def test_docs_and_the_openapi_schema_document_every_body(
    documents: tuple[ServedDocuments, httpx.Client],
) -> None:
    _, client = documents
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text and "/openapi.json" in docs.text
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]

    def body_of(path: str, method: str, status: str) -> Any:
        return paths[path][method]["responses"][status]["content"]["application/json"]["schema"]

    decisions = {
        "/v1/prompts/{name}/candidates/{version}/approve": "ApproveRequest",
        "/v1/prompts/{name}/candidates/{version}/reject": "RejectRequest",
        "/v1/prompts/{name}/rollback": "RollbackRequest",
    }
    for path, request in decisions.items():
        operation = paths[path]["post"]
        assert body_of(path, "post", "200") == {"$ref": "#/components/schemas/DecisionResult"}
        for status in ("401", "403", "404", "409", "422"):
            assert body_of(path, "post", status) == {"$ref": "#/components/schemas/ErrorBody"}
        requested = operation["requestBody"]["content"]["application/json"]["schema"]
        assert requested == {"$ref": f"#/components/schemas/{request}"}
        assert operation["security"] == [{"HTTPBearer": []}]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    active = "/v1/prompts/{name}/active"
    assert body_of(active, "get", "200") == {"$ref": "#/components/schemas/PromptDocument"}
    assert "304" in paths[active]["get"]["responses"]
    assert body_of("/v1/prompts/{name}/versions/{version}", "get", "200") == {
        "$ref": "#/components/schemas/CandidateView"
    }
    assert body_of("/v1/prompts", "get", "200")["items"] == {
        "$ref": "#/components/schemas/PromptSummary"
    }
    assert body_of("/readyz", "get", "503") == {"$ref": "#/components/schemas/ReadinessBody"}
    assert body_of("/healthz", "get", "503") == {"$ref": "#/components/schemas/HealthBody"}
