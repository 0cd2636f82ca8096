"""What an operator's log pipeline and Prometheus see of a real `gepa-sidecar run` child:
JSON log lines (LOG_FORMAT=json) with the agreed keys, a level that hides what it should
(LOG_LEVEL), and /metrics with the standard collectors, build_info, counters present at 0
and prompt labels only for the managed prompts."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from sidecar import __version__
from sidecar.runtime.broker import free_port
from sidecar.store.candidates import insert_candidate, mark_proposed
from sidecar.store.database import create_database_engine, migrate
from sidecar.store.repository import seed_prompt
from tests.conftest import Topics
from tests.helpers import encode, make_event, produce, scaled, wait_until
from tests.llm_server import LlmServer
from tests.processes import Sidecar, Start, sidecar_env

NAME = "customer-care"
KEYS = {"ts", "level", "logger", "message"}
RFC3339_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CONFIG = f"""
prompts:
  - name: {NAME}
    seed: {{system_prompt: "You help customers."}}
    judge:
      rubric: "Score 1.0 when the reply names the next step."
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def run_env(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, **settings: str
) -> dict[str, str]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    env = sidecar_env(kafka_bootstrap, topics, f"sqlite:///{tmp_path / 'sidecar.db'}")
    env.update(SIDECAR_CONFIG_FILE=str(config), **settings)
    return env


def stopped(sidecar: Sidecar) -> list[str]:
    """SIGTERM, wait for the exit, and the lines it wrote."""
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=scaled(60)) == 0
    return sidecar.log.read_text().splitlines()


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as a JSON object with the agreed keys; the test fails on any other line."""
    entries = []
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert set(entry) >= KEYS, line
        assert RFC3339_UTC_MS.match(entry["ts"]), line
        entries.append(entry)
    return entries


def samples(base_url: str) -> Samples:
    page = httpx.get(f"{base_url}/metrics", timeout=scaled(10)).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_a_json_run_writes_json_lines_and_exports_the_standard_metrics(
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
    start_sidecar: Start,
    llm_server: LlmServer,
) -> None:
    env = run_env(
        kafka_bootstrap,
        topics,
        tmp_path,
        SIDECAR_LOG_FORMAT="json",
        SIDECAR_JUDGE_MODEL="openai/judge",
        SIDECAR_JUDGE_API_BASE=llm_server.api_base,
        SIDECAR_PUBLISH_TARGETS="file,http",
    )
    sidecar = start_sidecar(env)
    wait_until(lambda: sidecar.metric("gepa_sidecar_ingest_paused") is not None, 60, "/metrics")
    found = samples(sidecar.base_url)
    assert value(found, "gepa_sidecar_build_info", version=__version__) == 1.0
    for standard in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert value(found, standard) is not None, standard
    assert any(name == "python_info" for name, _ in found)
    assert any(name == "python_gc_objects_collected_total" for name, _ in found)
    for outcome in ("ok", "invalid_reply", "provider_error"):
        assert value(found, "gepa_sidecar_judge_requests_total", outcome=outcome) is not None
    for outcome in ("finished", "failed", "skipped", "not_leader", "interrupted"):
        assert value(found, "gepa_sidecar_optimization_runs_total", outcome=outcome) == 0.0
    for outcome in ("finished", "failed", "not_leader", "interrupted"):
        assert value(found, "gepa_sidecar_shadow_passes_total", outcome=outcome) == 0.0
    publishes = {
        dict(labels)["target"]
        for name, labels in found
        if name == "gepa_sidecar_publishes_total" and dict(labels)["outcome"] == "failed"
    }
    assert publishes == {"file", "http"}  # the configured targets, not kafka

    rng = random.Random(5)
    events = [make_event(rng) for _ in range(2)]
    events += [make_event(rng, prompt_name=f"junk-{i}") for i in range(3)]
    keys = [event["event_id"].encode() for event in events]
    produce(kafka_bootstrap, topics.traffic, [encode(event) for event in events], keys)
    consumed = "gepa_sidecar_events_consumed_total"

    def counted() -> dict[str, float]:
        return {
            dict(labels)["prompt"]: amount
            for (name, labels), amount in samples(sidecar.base_url).items()
            if name == consumed and dict(labels)["outcome"] == "accepted"
        }

    wait_until(lambda: counted() == {NAME: 2.0, "_unmanaged": 3.0}, 60, "the events counted")

    entries = json_lines(stopped(sidecar))
    serving = [e for e in entries if e["message"].startswith("sidecar serving on port")]
    assert [e["level"] for e in serving] == ["INFO"]
    assert serving[0]["logger"] == "sidecar.runtime.app"
    # only the judge's model is set: the other roles use it, and the log says so once
    notice = (
        "task and reflection use the judge's model openai/judge "
        "(SIDECAR_TASK_MODEL, SIDECAR_REFLECTION_MODEL not set)"
    )
    assert [e["message"] for e in entries].count(notice) == 1


def test_a_warning_level_json_run_logs_its_exception_in_one_line_and_no_info(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, start_sidecar: Start
) -> None:
    """A shadow pass fails on tables that are gone: its exception, with the traceback, is one
    JSON line; LOG_LEVEL=WARNING hides the INFO lines (such as the one saying it serves)."""
    engine = create_database_engine(f"sqlite:///{tmp_path / 'sidecar.db'}")
    migrate(engine)
    now = datetime.now(UTC)
    seed_prompt(engine, NAME, {"system_prompt": "You help customers."}, now)
    insert_candidate(engine, NAME, {"system_prompt": "Be kind."}, [1], None, "", [], now)
    mark_proposed(engine, NAME, [2], "beat the champion", now)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE judgments"))
        connection.execute(text("DROP TABLE events"))  # the pass's query fails
    engine.dispose()
    port = free_port()
    env = run_env(
        kafka_bootstrap,
        topics,
        tmp_path,
        SIDECAR_LOG_FORMAT="json",
        SIDECAR_LOG_LEVEL="warning",
        SIDECAR_HTTP_PORT=str(port),
        SIDECAR_SHADOW_SCHEDULE="1",
    )
    sidecar = start_sidecar(env)
    wait_until(lambda: '"exc": ' in sidecar.log.read_text(), 60, "a logged exception")
    healthz = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=scaled(10))
    assert healthz.status_code in (200, 503)  # it serves: the run got past its start-up

    entries = json_lines(stopped(sidecar))
    assert {entry["level"] for entry in entries} <= {"WARNING", "ERROR", "CRITICAL"}
    # kafka-python may log a dropped broker connection with its exception too (a broken pipe).
    failures = [e for e in entries if "exc" in e and e["logger"].startswith("sidecar.")]
    assert failures
    for failure in failures:
        assert failure["message"] == f"shadow pass for {NAME} failed"
        assert failure["level"] == "ERROR"
        assert failure["exc"].startswith("Traceback (most recent call last):")
        assert "no such table" in failure["exc"]


def test_warnings_and_uncaught_exceptions_are_json_lines_too(tmp_path: Path) -> None:
    script = (
        "import threading, warnings\n"
        "from sidecar.logs import log_to_stderr\n"
        "log_to_stderr('INFO', 'json')\n"
        "warnings.warn('careful', UserWarning)\n"
        "worker = threading.Thread(target=lambda: 1 / 0, name='worker')\n"
        "worker.start(); worker.join()\n"
        "raise RuntimeError('boom')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode == 1
    warned, in_thread, uncaught = json_lines(result.stderr.splitlines())
    assert (warned["level"], warned["logger"]) == ("WARNING", "py.warnings")
    assert "careful" in warned["message"]
    assert in_thread["message"] == "uncaught exception in thread worker"
    assert in_thread["exc"].rstrip().endswith("ZeroDivisionError: division by zero")
    assert uncaught["level"] == "CRITICAL"
    assert uncaught["exc"].rstrip().endswith("RuntimeError: boom")
