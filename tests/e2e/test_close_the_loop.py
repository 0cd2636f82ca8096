"""The loop closed end to end, as an operator meets it: live traffic through the real broker is
judged, an optimize turn proposes a better prompt, a shadow pass on traffic received after it
sends it to approval, a person approves it over HTTP with the admin token, and the file, the
prompts topic and GET /active all hold it; a rollback brings the seed back everywhere.

Real broker, the test LLM server (its world: the seed scores 0, better prompts score more)
through litellm for every model role, a SQLite file and PostgreSQL. The outbox relay polls once
an hour, so within the test only the API's wake-up after a decision delivers. The test prints
one JSON line of what it measured (`pytest -s`)."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from sidecar.events import PromptDocument
from sidecar.promote.publishers import FilePublisher
from sidecar.runtime.app import App
from sidecar.settings import PromptsConfig, Settings
from sidecar.store.promotions import never_breed
from sidecar.store.repository import count_stored_events, status_summary, transaction
from sidecar.store.tables import Evaluation
from tests.conftest import Topics
from tests.helpers import (
    activations,
    encode,
    make_event,
    metric_value,
    produce,
    scaled,
    sidecar_settings,
    wait_until,
)
from tests.llm_server import LlmServer, task_reply
from tests.world import QUESTIONS, SEED, SPEC, world_settings

NAME = SPEC.name
PROMPT = f"/v1/prompts/{NAME}"
ACTIVE = f"{PROMPT}/active"
TOKEN = "e2e-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIVE, FRESH = 12, 9
"""Events judged before the optimize turn; events received after it, for the shadow pass."""


def settings_for(bootstrap: str, topics: Topics, database_url: str, server: LlmServer) -> Settings:
    world = world_settings(server.api_base).model_dump(exclude_unset=True)
    return sidecar_settings(
        bootstrap,
        topics,
        database_url,
        **world,
        judge_poll_interval_s=0.05,
        admin_token=TOKEN,
        publish_poll_interval_s=3600,  # only a decision's wake-up delivers within the test
        optimize_schedule="86400",  # the test runs both jobs itself
        shadow_schedule="86400",
        shadow_min_pairs=8,
    )


def send_traffic(bootstrap: str, topic: str, n: int, seed: int) -> None:
    """n events asking the world's questions in turn, answered in production by the seed."""
    rng, now = random.Random(seed), datetime.now(UTC).isoformat()
    questions = [QUESTIONS[index % len(QUESTIONS)] for index in range(n)]
    events = [
        make_event(rng, timestamp=now, inputs={"user_message": q}, output=task_reply(SEED, q))
        for q in questions
    ]
    produce(bootstrap, topic, map(encode, events), [e["event_id"].encode() for e in events])


def evaluations(app: App) -> int:
    """Replays paid so far (each a task call and its judgment): the metric calls."""
    with transaction(app.engine) as connection:
        return int(connection.execute(select(func.count()).select_from(Evaluation)).scalar_one())


def scrape(client: httpx.Client) -> dict[str, float]:
    """/metrics as {'name{label="value",...}': value}, the labels sorted by name."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def holding(app: App, client: httpx.Client, version: int) -> bool:
    """The file and GET /active hold `version`, and the relay's tick that delivered it ended
    (the active-version gauge is set after every delivery of that tick)."""
    on_file = FilePublisher(app.settings.publish_dir).current(NAME)
    return (
        on_file is not None
        and on_file.version == version
        and client.get(ACTIVE).json()["version"] == version
        and metric_value(app.metrics, "active_prompt_version", prompt=NAME) == version
    )


def publishes(samples: dict[str, float]) -> dict[str, float]:
    return {
        target: samples.get(f'gepa_sidecar_publishes_total{{outcome="ok",target="{target}"}}', 0)
        for target in ("file", "kafka", "http")
    }


def test_traffic_to_an_approved_prompt_everywhere_and_back(
    kafka_bootstrap: str, topics: Topics, database_url: str, llm_server: LlmServer
) -> None:
    started = time.monotonic()
    settings = settings_for(kafka_bootstrap, topics, database_url, llm_server)
    app = App(settings, PromptsConfig(prompts=[SPEC]))
    thread = threading.Thread(target=app.run, name="app-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: app.scheduler is not None, 60, "the app's jobs")
        assert app.http is not None
        with httpx.Client(
            base_url=f"http://127.0.0.1:{app.http.port}", timeout=scaled(10)
        ) as client:
            # live traffic, judged; the seed published on start to the file and served
            send_traffic(kafka_bootstrap, settings.traffic_topic, LIVE, seed=1)
            wait_until(lambda: judged(app) == LIVE, 60, f"{LIVE} judged events")
            wait_until(lambda: holding(app, client, 1), 30, "the seed published on start")
            seed_etag = client.get(ACTIVE).headers["etag"]
            assert activations(kafka_bootstrap, settings.prompts_topic) == []
            optimized = optimize_turn(app, client)
            version = optimized["version"]
            send_traffic(kafka_bootstrap, settings.traffic_topic, FRESH, seed=2)
            wait_until(lambda: count_stored_events(app.engine) == LIVE + FRESH, 60, "fresh events")
            shadowed = shadow_pass(app, client, version)
            first = approve_over_http(app, client, version, seed_etag)
            assert activations(kafka_bootstrap, settings.prompts_topic) == [(version, first)]
            second = roll_back_over_http(app, client, version, seed_etag)
            assert activations(kafka_bootstrap, settings.prompts_topic) == [
                (version, first),
                (1, second),
            ]
    finally:
        app.stop()
        thread.join(scaled(30))
    assert not thread.is_alive()
    figures = {
        "database": app.engine.dialect.name,
        "events": {"live": LIVE, "fresh": FRESH},
        "optimize": optimized,
        "shadow": shadowed,
        "activations": {"approve": [version, first], "rollback": [1, second]},
        "llm_requests_ok": llm_server.requests["ok"],
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures, sort_keys=True))


def judged(app: App) -> int:
    return int(status_summary(app.engine)["events"]["judged"])


def optimize_turn(app: App, client: httpx.Client) -> dict[str, Any]:
    """One optimize turn proposes versions that beat the seed, each with its replayed mean
    score; the best (the one a shadow pass admits first) and the run's figures."""
    assert app.scheduler is not None
    app.scheduler.run_once()
    proposed = client.get(f"{PROMPT}/candidates", params={"status": "proposed"}).json()
    assert proposed and all(c["mean_score"] is not None for c in proposed)
    best = max(proposed, key=lambda c: (c["evidence"]["pareto_mean"], c["version"]))
    pareto = best["evidence"]
    assert pareto["pareto_mean"] > pareto["champion_mean"]
    calls = status_summary(app.engine)["optimization"]["metric_calls"]
    assert scrape(client)["gepa_sidecar_optimization_metric_calls_total{}"] == calls > 0
    return {
        "metric_calls": calls,
        "proposed": [c["version"] for c in proposed],
        "version": best["version"],
        "mean_score": best["mean_score"],
        **{k: pareto[k] for k in ("pareto_size", "pareto_mean", "champion_mean", "p_value")},
    }


def shadow_pass(app: App, client: httpx.Client, version: int) -> dict[str, Any]:
    """A shadow pass on the fresh events sends `version` to a person, with its evidence."""
    assert app.scheduler is not None
    paid_before = evaluations(app)
    app.scheduler.shadow_once()
    calls = evaluations(app) - paid_before
    row = client.get(f"{PROMPT}/versions/{version}").json()
    assert row["status"] == "awaiting_approval"
    shadow = row["evidence"]["shadow"]
    assert (shadow["n"], shadow["champion_version"], shadow["decision"]) == (FRESH, 1, "pass")
    assert shadow["p_value"] < app.settings.shadow_alpha
    assert shadow["shadow_mean"] > shadow["champion_mean"]
    versions = client.get(f"{PROMPT}/versions").json()
    shadowed = [c["version"] for c in versions if "shadow" in (c["evidence"] or {})]
    assert calls == (1 + len(shadowed)) * FRESH  # the champion's replays serve every candidate
    figures = ("n", "p_value", "shadow_mean", "champion_mean", "mean_delta", "mode")
    return {"metric_calls": calls, "candidates": shadowed, **{k: shadow[k] for k in figures}}


def approve_over_http(app: App, client: httpx.Client, version: int, seed_etag: str) -> int:
    """Refused without the right token (nothing changes), then approved: the file and GET
    /active hold `version` under a new ETag. The activation id."""
    url, body = f"{PROMPT}/candidates/{version}/approve", {"by": "alice", "note": "better"}
    for refused in ({}, {"Authorization": "Bearer not-the-token"}):
        assert client.post(url, json=body, headers=refused).status_code == 401
    assert client.get(f"{PROMPT}/versions/{version}").json()["status"] == "awaiting_approval"
    assert client.get(ACTIVE).headers["etag"] == seed_etag
    approved = client.post(url, json=body, headers=AUTH)
    assert approved.status_code == 200, approved.text
    result = approved.json()
    assert (result["version"], result["previous_version"]) == (version, 1)
    assert (result["action"], result["targets"]) == ("approve", ["file", "kafka", "http"])
    wait_until(lambda: holding(app, client, version), 60, f"v{version} published")
    served = client.get(ACTIVE)
    on_file = FilePublisher(app.settings.publish_dir).current(NAME)
    assert on_file == PromptDocument.model_validate_json(served.content)
    assert on_file.approved_by == "alice"
    assert served.headers["etag"] == f'"{on_file.sha256}"' != seed_etag
    stale = client.get(ACTIVE, headers={"If-None-Match": seed_etag})
    assert (stale.status_code, stale.content) == (200, served.content)
    assert client.get(ACTIVE, headers={"If-None-Match": served.headers["etag"]}).status_code == 304
    samples = scrape(client)
    assert samples[f'gepa_sidecar_active_prompt_version{{prompt="{NAME}"}}'] == version
    assert samples[f'gepa_sidecar_approvals_total{{decision="approved",prompt="{NAME}"}}'] == 1
    assert publishes(samples) == {"file": 2, "kafka": 1, "http": 2}  # file, http: the seed too
    return int(result["activation_id"])


def roll_back_over_http(app: App, client: httpx.Client, version: int, seed_etag: str) -> int:
    """The seed is back in the file and on GET /active (its old ETag matches again), and the
    rolled-back version never breeds again. The activation id."""
    back = client.post(
        f"{PROMPT}/rollback", json={"by": "bob", "reason": "complaints"}, headers=AUTH
    )
    assert back.status_code == 200, back.text
    result = back.json()
    assert (result["version"], result["previous_version"]) == (1, version)
    assert result["action"] == "rollback"
    wait_until(lambda: holding(app, client, 1), 60, "the seed republished")
    assert client.get(ACTIVE, headers={"If-None-Match": seed_etag}).status_code == 304
    samples = scrape(client)
    assert samples[f'gepa_sidecar_rollbacks_total{{prompt="{NAME}"}}'] == 1
    assert samples[f'gepa_sidecar_active_prompt_version{{prompt="{NAME}"}}'] == 1
    assert publishes(samples) == {"file": 3, "kafka": 2, "http": 3}
    assert version in never_breed(app.engine, NAME)
    assert client.get(f"{PROMPT}/versions/{version}").json()["status"] == "retired"
    return int(result["activation_id"])
