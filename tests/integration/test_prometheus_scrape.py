"""A real Prometheus (Debian's server) loads deploy/prometheus/rules.yaml and scrapes a running
`gepa-sidecar run`, driven as production drives it: traffic for three prompts through the real
broker, judged by the test LLM server through litellm; a GEPA run of each (`gepa-sidecar
optimize`); the sidecar's own shadow schedule sends the candidates of customer-care and
billing to approval and keeps those of returns in shadow (too few fresh events); a person
approves customer-care's over HTTP and rolls it back, billing's stays waiting. Then every
PromQL expression of the rules, the dashboard's panels and its annotations runs through
Prometheus's query API, every metric they name has a series the sidecar really exports, and
every selector, label matchers and all, selects one."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from sidecar.runtime.child import ChildProcess
from sidecar.settings import PromptSpec
from sidecar.store.database import create_database_engine
from sidecar.store.repository import status_summary
from tests.conftest import Topics
from tests.helpers import encode, make_event, produce, scaled, wait_until
from tests.llm_server import LlmServer, task_reply
from tests.processes import Sidecar, Start, sidecar_env
from tests.world import QUESTIONS, ROLES, SEED, SPEC

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
PROMETHEUS = "/usr/bin/prometheus"
CARE = SPEC
BILLING = SPEC.model_copy(update={"name": "billing"})
RETURNS = SPEC.model_copy(update={"name": "returns"})
PROMPTS = (CARE, BILLING, RETURNS)
TOKEN = "scrape-admin-token"
LIVE, FRESH, FEW, MIN_PAIRS = 12, 9, 3, 8
"""Judged events per prompt before GEPA; fresh events for the shadow passes of customer-care
and billing (at least MIN_PAIRS, so their candidates reach approval) and of returns (FEW:
its candidates stay in shadow)."""
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$prompt": ".*"}
"""What Grafana puts in place of the dashboard's variables (`.*` is the prompt's "All")."""
METRIC = r"(?<![\w:])(?:gepa_sidecar[\w:]*|process_\w+|up)(?![\w:(])"
SELECTOR = re.compile(rf"({METRIC})(\{{[^}}]*\}})?")
ACTIVE_JOIN = (
    "gepa_sidecar:judge_score:mean_1h and on (prompt, version)"
    ' count_values by (prompt) ("version", gepa_sidecar_active_prompt_version)'
)
"""The score-drop alert's join: the judge-score means of the version each prompt has active."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a dashboard variable the test does not know: {expr}"
    return expr


def expressions() -> dict[str, str]:
    """Every PromQL expression shipped, by where it comes from."""
    found: dict[str, str] = {}
    for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            found[f"rule {rule.get('alert') or rule['record']}"] = rule["expr"]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets") or []:
            where = f"panel {panel['title']} {target['refId']}"
            found[where] = grafana_to_promql(target["expr"])
    for annotation in dashboard["annotations"]["list"]:
        found[f"annotation {annotation['name']}"] = grafana_to_promql(annotation["expr"])
    return found


def recorded_names() -> set[str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {rule["record"] for group in rules for rule in group["rules"] if "record" in rule}


def prometheus_config(directory: Path, sidecar: Sidecar) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "gepa-sidecar",
                "static_configs": [{"targets": [sidecar.base_url.removeprefix("http://")]}],
            }
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextmanager
def running_prometheus(directory: Path, sidecar: Sidecar) -> Iterator[httpx.Client]:
    """Prometheus on a free loopback port, its output drained to a file; stopped after."""
    port = free_port()
    child = ChildProcess(
        [
            PROMETHEUS,
            f"--config.file={prometheus_config(directory, sidecar)}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=scaled(10)) as client:

        def ready() -> bool:
            try:
                return client.get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        try:
            child.start(ready, scaled(30))
            yield client
        finally:
            child.close()


@pytest.fixture
def sidecar_env_for_world(
    kafka_bootstrap: str, topics: Topics, sqlite_url: str, llm_server: LlmServer, tmp_path: Path
) -> dict[str, str]:
    """The three prompts, every model role on the test LLM server, shadowing every 2 s, GEPA only
    when the test asks, publishing to a directory of the test."""
    config = tmp_path / "prompts.yaml"
    specs = [spec.model_dump(exclude_none=True) for spec in PROMPTS]
    config.write_text(yaml.safe_dump({"prompts": specs}), encoding="utf-8")
    env = sidecar_env(kafka_bootstrap, topics, sqlite_url)
    for role in ROLES:
        env[f"SIDECAR_{role.upper()}_MODEL"] = "openai/local"
        env[f"SIDECAR_{role.upper()}_API_BASE"] = llm_server.api_base
    env.update(
        SIDECAR_CONFIG_FILE=str(config),
        SIDECAR_KAFKA_AUTO_OFFSET_RESET="earliest",
        SIDECAR_ADMIN_TOKEN=TOKEN,
        SIDECAR_PUBLISH_DIR=str(tmp_path / "published"),
        SIDECAR_OPTIMIZE_SCHEDULE="86400",
        SIDECAR_SHADOW_SCHEDULE="2",
        SIDECAR_SHADOW_MIN_PAIRS=str(MIN_PAIRS),
        SIDECAR_RUN_MAX_METRIC_CALLS="200",
        SIDECAR_OPTIMIZE_PATIENCE="6",
        SIDECAR_LLM_BACKOFF_BASE_S="0.01",
        SIDECAR_JUDGE_POLL_INTERVAL_S="0.05",
        PYTHONUNBUFFERED="1",
    )
    return env


def send(bootstrap: str, topic: str, spec: PromptSpec, n: int, seed: int) -> None:
    """n events of `spec` asking the world's questions, answered in production by the seed."""
    rng, now = random.Random(seed), datetime.now(UTC).isoformat()
    events = [
        make_event(
            rng,
            prompt_name=spec.name,
            timestamp=now,
            inputs={"user_message": QUESTIONS[index % len(QUESTIONS)]},
            output=task_reply(SEED, QUESTIONS[index % len(QUESTIONS)]),
        )
        for index in range(n)
    ]
    produce(bootstrap, topic, map(encode, events), [e["event_id"].encode() for e in events])


def scrape(sidecar: Sidecar) -> dict[str, float]:
    """The sidecar's /metrics as {'name{label="value",...}': value}, labels sorted."""
    samples: dict[str, float] = {}
    page = httpx.get(f"{sidecar.base_url}/metrics", timeout=scaled(10)).text
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def optimize(env: dict[str, str], cwd: Path, spec: PromptSpec) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "sidecar", "optimize", "--prompt", spec.name],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]


def versions(api: httpx.Client, spec: PromptSpec, status: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.get(
        f"/v1/prompts/{spec.name}/candidates", params={"status": status}
    ).json()
    return found


def judged(engine: Engine) -> int:
    return int(status_summary(engine)["events"]["judged"])


def drive(sidecar: Sidecar, env: dict[str, str], topics: Topics, bootstrap: str, cwd: Path) -> None:
    """Judging, GEPA, shadow, an approval and a rollback, so that every metric has values."""
    engine = create_database_engine(env["SIDECAR_DATABASE_URL"])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=sidecar.base_url, timeout=scaled(10)) as api:
            for seed, spec in enumerate(PROMPTS):
                send(bootstrap, topics.traffic, spec, LIVE, seed=seed)
            total = len(PROMPTS) * LIVE
            wait_until(lambda: judged(engine) == total, 60, f"{total} judged events")
            for spec in PROMPTS:
                optimize(env, cwd, spec)
            for seed, (spec, n) in enumerate(((CARE, FRESH), (BILLING, FRESH), (RETURNS, FEW))):
                send(bootstrap, topics.traffic, spec, n, seed=10 + seed)
            for spec in (CARE, BILLING):
                wait_until(
                    lambda spec=spec: bool(versions(api, spec, "awaiting_approval")),
                    120,
                    f"a {spec.name} candidate awaiting approval",
                )
            pairs = f'gepa_sidecar_shadow_pairs{{prompt="{RETURNS.name}",version='
            wait_until(
                lambda: FEW in [v for k, v in scrape(sidecar).items() if k.startswith(pairs)],
                120,
                f"a {RETURNS.name} candidate in shadow with {FEW} pairs",
            )
            best = max(versions(api, CARE, "awaiting_approval"), key=lambda c: c["mean_score"])
            approve = f"/v1/prompts/{CARE.name}/candidates/{best['version']}/approve"
            approved = api.post(approve, json={"by": "alice"}, headers=auth)
            assert approved.status_code == 200, approved.text
            active = f'gepa_sidecar_active_prompt_version{{prompt="{CARE.name}"}}'
            wait_until(lambda: scrape(sidecar).get(active) == best["version"], 60, "approved")
            back = api.post(f"/v1/prompts/{CARE.name}/rollback", json={"by": "bob"}, headers=auth)
            assert back.status_code == 200, back.text
            rolled = f'gepa_sidecar_rollbacks_total{{prompt="{CARE.name}"}}'
            wait_until(lambda: scrape(sidecar).get(rolled) == 1, 60, "the rollback counted")
            assert scrape(sidecar)[active] == 1
    finally:
        engine.dispose()


def query(prometheus: httpx.Client, expr: str) -> dict[str, Any]:
    answer: dict[str, Any] = prometheus.get("/api/v1/query", params={"query": expr}).json()
    return answer


def series(prometheus: httpx.Client, expr: str) -> int:
    answer = query(prometheus, expr)
    assert answer["status"] == "success", f"{expr}: {answer}"
    return len(answer["data"]["result"])


def problems_of(prometheus: httpx.Client, shipped: dict[str, str]) -> dict[str, list[str]]:
    """What is wrong with the shipped expressions against what Prometheus scraped: the ones
    that fail, the metrics they name and the selectors they use that select no series, and
    rules whose evaluation failed."""
    failed = [
        where for where, expr in shipped.items() if query(prometheus, expr)["status"] != "success"
    ]
    names = {n for expr in shipped.values() for n in re.findall(METRIC, expr)}
    selectors = {s.group(0) for expr in shipped.values() for s in SELECTOR.finditer(expr)}
    groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
    return {
        "expressions that fail": sorted(failed),
        "metrics without a series": sorted(n for n in names if series(prometheus, n) == 0),
        "selectors without a series": sorted(s for s in selectors if series(prometheus, s) == 0),
        "rules not evaluated ok": [
            r["name"] for g in groups for r in g["rules"] if r["health"] != "ok"
        ],
    }


def test_prometheus_scrapes_the_sidecar_and_every_shipped_expression_selects_its_series(
    kafka_bootstrap: str,
    topics: Topics,
    sidecar_env_for_world: dict[str, str],
    start_sidecar: Start,
    tmp_path: Path,
) -> None:
    env = sidecar_env_for_world
    sidecar = start_sidecar(env)
    wait_until(lambda: sidecar.metric("gepa_sidecar_ingest_paused") is not None, 60, "serving")
    with running_prometheus(tmp_path, sidecar) as prometheus:
        wait_until(lambda: series(prometheus, 'up{job="gepa-sidecar"} == 1') == 1, 60, "up")
        drive(sidecar, env, topics, kafka_bootstrap, tmp_path)
        for seen in ("gepa_sidecar_rollbacks_total", "gepa_sidecar:judge_score:mean_1h"):
            wait_until(lambda seen=seen: series(prometheus, seen) > 0, 60, f"{seen} in Prometheus")
        shipped = expressions()
        groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
        assert sum(len(g["rules"]) for g in groups) == sum(k.startswith("rule ") for k in shipped)
        assert recorded_names() <= {n for e in shipped.values() for n in re.findall(METRIC, e)}
        # the dashboard's prompt variable: Grafana asks for these label values
        prompts = prometheus.get(
            "/api/v1/label/prompt/values",
            params={"match[]": "gepa_sidecar_active_prompt_version"},
        ).json()["data"]
        assert set(prompts) == {spec.name for spec in PROMPTS}
        # every prompt is back on its seed, whose production replies the judge rule scores 0
        active_means = query(prometheus, ACTIVE_JOIN)["data"]["result"]
        assert {
            (m["metric"]["prompt"], m["metric"]["version"], float(m["value"][1]))
            for m in active_means
        } == {(spec.name, "1", 0.0) for spec in PROMPTS}
        problems = problems_of(prometheus, shipped)
        assert problems == {key: [] for key in problems}, json.dumps(problems, indent=1)
