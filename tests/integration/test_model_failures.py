"""Model failures are never silent: through real litellm to a closed port or with no
credentials, each failure is logged with its cause once and then counted (a line a minute at
most), kept in the real database for `status`, and a run or command that could do nothing
because of them says so and exits 1."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from sidecar.errors import LlmError
from sidecar.judge.worker import JudgeWorker
from sidecar.llm.failures import FailureLog, FailureNotice
from sidecar.llm.gateway import Gateway
from sidecar.llm.loop_clients import run_with_models
from sidecar.metrics import Metrics
from sidecar.runtime.broker import free_port
from sidecar.runtime.scheduler import JobScheduler
from sidecar.settings import PromptsConfig, PromptSpec, load_settings
from sidecar.store.database import create_database_engine
from sidecar.store.model_errors import StoredFailures, last_model_errors
from sidecar.store.repository import status_summary, store_events, transaction
from sidecar.store.tables import OptimizationRun
from tests.cli_helpers import sidecar
from tests.helpers import consumed, metric_value, wait_until
from tests.llm_server import LlmServer
from tests.world import SPEC, seed_world, world_environment, world_settings

HELLO = [{"role": "user", "content": "hello"}]
ROLES = ("judge", "task", "reflection")
NO_KEY = "openai/gpt-4o-mini"  # with no api_base and no OPENAI_API_KEY: Missing credentials
MISSING = "AuthenticationError: Missing credentials"


@pytest.fixture
def no_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OpenAI key here nor in the commands run from here."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def closed_base() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def settings(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "judge_model": "openai/local",
        "judge_api_base": closed_base(),
        "llm_max_retries": 0,
        "llm_backoff_base_s": 0.01,
        **overrides,
    }
    return load_settings(**values)


def failing_calls(gateway: Gateway, n: int, role: str = "judge") -> list[LlmError]:
    async def calls() -> list[LlmError]:
        raised = []
        for _ in range(n):
            try:
                await gateway.complete(role, HELLO)
            except LlmError as exc:
                raised.append(exc)
        return raised

    return run_with_models(calls())


def told(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sidecar.llm.gateway" and r.levelno == logging.WARNING and text in r.message
    ]


class Kept:
    """A failure sink that keeps what it is given."""

    def __init__(self) -> None:
        self.notices: list[FailureNotice] = []

    def record(self, notice: FailureNotice) -> None:
        self.notices.append(notice)


# --- the gateway ------------------------------------------------------------------------------


def test_an_unreachable_model_is_told_once_with_its_cause_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, kept = Metrics([]), Kept()
    gateway = Gateway(settings(), metrics, sink=kept)
    clock = [gateway.failures.clock()]
    gateway.failures = FailureLog(clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="sidecar.llm.gateway"):
        errors = failing_calls(gateway, 12)
        assert told(caplog, "judge model call failed") == [
            "judge model call failed: APIConnectionError: Connection error. "
            "(more APIConnectionError failures of the judge model: a line a minute at most)"
        ]
        assert {(e.kind, e.retryable) for e in errors} == {("APIConnectionError", True)}
        assert metric_value(metrics, "llm_errors_total", role="judge", kind="APIConnectionError")
        assert [n.count for n in kept.notices] == [1]

        clock[0] += timedelta(seconds=60)
        failing_calls(gateway, 1)
    assert told(caplog, "judge model call failed")[1] == (
        "judge model call failed 12 times more in 60s: APIConnectionError: Connection error."
    )
    assert [n.count for n in kept.notices] == [1, 12]
    assert metric_value(metrics, "llm_errors_total", role="judge", kind="APIConnectionError") == 13


@pytest.mark.usefixtures("no_openai_key")
def test_missing_credentials_are_a_refusal_not_retried() -> None:
    gateway = Gateway(settings(judge_model=NO_KEY, judge_api_base=None, llm_max_retries=3))
    [error] = failing_calls(gateway, 1)
    assert (error.kind, error.retryable, error.status) == ("AuthenticationError", False, None)
    assert str(error).startswith(f"judge model call failed: {MISSING}.")
    assert error.detail.startswith("Missing credentials.")


def test_a_database_that_cannot_keep_a_failure_never_changes_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = create_database_engine(f"postgresql+psycopg://127.0.0.1:{free_port()}/none")
    gateway = Gateway(settings(), sink=StoredFailures(nowhere))
    with caplog.at_level(logging.DEBUG, logger="sidecar.llm.gateway"):
        [error] = failing_calls(gateway, 1)
    assert error.kind == "APIConnectionError"  # the model's error, not the database's
    assert any("cannot keep the judge model's failure" in r.message for r in caplog.records)
    nowhere.dispose()


# --- the judge worker (what `run` runs) and `status` ------------------------------------------


@pytest.mark.usefixtures("no_openai_key")
def test_a_judge_without_credentials_is_told_once_and_kept_for_status(
    database_url: str,
    migrated_engine: Callable[[str], Engine],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    engine = migrated_engine(database_url)
    store_events(engine, consumed(random.Random(3), 10), {}, datetime.now(UTC))
    config = PromptsConfig(
        prompts=[PromptSpec(name="customer-care", seed={"system_prompt": "Help."})]
    )
    values = {"judge_model": NO_KEY, "judge_retry_after_s": 0.05, "judge_poll_interval_s": 0.05}
    judge_settings = load_settings(**values)
    metrics = Metrics(["customer-care"])
    gateway = Gateway(judge_settings, metrics, sink=StoredFailures(engine))
    with caplog.at_level(logging.WARNING, logger="sidecar.llm.gateway"):
        worker = JudgeWorker(engine, gateway, config, metrics).start()
        try:
            wait_until(lambda: gateway.failures.failures >= 10, what="10 failed judge calls")
        finally:
            worker.stop()
    assert status_summary(engine)["events"]["judge_errors"] >= 10
    assert len(told(caplog, "judge model call failed")) == 1  # not one per call
    kept = last_model_errors(engine, ROLES)
    assert kept["judge"]["kind"] == "AuthenticationError"
    assert kept["judge"]["last_error"].startswith("Missing credentials.")
    assert kept["judge"]["count"] >= 1
    assert kept["task"] == {
        "kind": None,
        "last_error": None,
        "last_error_at": None,
        "first_error_at": None,
        "count": 0,
    }
    env = {"SIDECAR_DATABASE_URL": database_url}
    shown = sidecar(tmp_path, "status", **env)
    assert shown.returncode == 0, shown.stderr
    assert "None" not in shown.stdout
    [line] = [line for line in shown.stdout.splitlines() if line.startswith("model      judge")]
    assert "last error " in line and f"): {MISSING}." in line
    assert "model      task       no errors" in shown.stdout
    as_json = json.loads(sidecar(tmp_path, "status", "--json", **env).stdout)
    assert as_json["models"]["judge"]["kind"] == "AuthenticationError"
    assert as_json["models"]["reflection"]["last_error"] is None


# --- optimize ---------------------------------------------------------------------------------


def world_env(tmp_path: Path, llm_server: LlmServer, url: str, **roles: str) -> dict[str, str]:
    env = {**world_environment(llm_server, tmp_path), "SIDECAR_DATABASE_URL": url, **roles}
    return {name: value for name, value in env.items() if value}  # "" unsets a role's api_base


def run_status(engine: Engine) -> tuple[str, str | None]:
    with transaction(engine) as connection:
        [(status, error)] = connection.execute(
            select(OptimizationRun.status, OptimizationRun.error)  # type: ignore[call-overload]
        ).all()
    return status, error


@pytest.mark.usefixtures("no_openai_key")
def test_optimize_whose_reflection_model_refuses_stops_exits_1_naming_it_and_status_shows_it(
    tmp_path: Path,
    llm_server: LlmServer,
    database_url: str,
    migrated_engine: Callable[[str], Engine],
) -> None:
    engine = seed_world(migrated_engine(database_url), llm_server, 24)
    env = world_env(
        tmp_path,
        llm_server,
        database_url,
        SIDECAR_REFLECTION_MODEL=NO_KEY,
        SIDECAR_REFLECTION_API_BASE="",
    )
    ran = sidecar(tmp_path, "optimize", "--json", **env)
    assert ran.returncode == 1, ran.stderr
    lines = ran.stderr.splitlines()
    cause = f"reflection model call failed: {MISSING}."
    assert lines[-1].startswith(f"error: optimize: no proposal could be made: {cause}")
    report = json.loads(ran.stdout)
    assert (report["outcome"], report["stop_reason"]) == ("failed", "model_error")
    assert report["error"] == lines[-1].removeprefix("error: optimize: ")
    assert report["iterations"] == 2  # not the 20 a patience of no progress would take
    first = [line for line in lines if f"WARNING sidecar.llm.gateway: {cause}" in line]
    more = [line for line in lines if "reflection model call failed 3 times more in" in line]
    assert (len(first), len(more)) == (1, 1)  # four failures: two lines
    assert run_status(engine) == ("failed", report["error"])

    status = json.loads(sidecar(tmp_path, "status", "--json", **env).stdout)
    reflection = status["models"]["reflection"]
    assert (reflection["kind"], reflection["count"]) == ("AuthenticationError", 4)
    assert status["models"]["judge"]["last_error"] is None
    human = sidecar(tmp_path, "status", **env).stdout
    assert "None" not in human
    assert "4 failures since " in human and f"): {MISSING}." in human


def test_optimize_whose_task_model_is_unreachable_exits_1_naming_it(
    tmp_path: Path, llm_server: LlmServer, sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine = seed_world(migrated_engine(sqlite_url), llm_server, 24)
    env = world_env(
        tmp_path,
        llm_server,
        sqlite_url,
        SIDECAR_TASK_API_BASE=closed_base(),
        SIDECAR_LLM_MAX_RETRIES="1",
    )
    ran = sidecar(tmp_path, "optimize", **env)
    assert ran.returncode == 1, ran.stderr
    assert ran.stderr.splitlines()[-1] == (
        "error: optimize: no proposal could be made: "
        "task model call failed: APIConnectionError: Connection error."
    )
    assert len([line for line in ran.stderr.splitlines() if "WARNING" in line]) <= 2
    assert run_status(engine)[0] == "failed"


@pytest.mark.usefixtures("no_openai_key")
def test_a_scheduled_run_that_its_models_failed_is_counted_and_logged_with_the_cause(
    sqlite_url: str,
    migrated_engine: Callable[[str], Engine],
    llm_server: LlmServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = seed_world(migrated_engine(sqlite_url), llm_server, 12)
    refused = world_settings(llm_server.api_base, reflection_model=NO_KEY, reflection_api_base=None)
    metrics = Metrics([SPEC.name])
    scheduler = JobScheduler(engine, refused, PromptsConfig(prompts=[SPEC]), metrics)
    with caplog.at_level(logging.INFO, logger="sidecar.runtime.scheduler"):
        scheduler.run_once()
    [line] = [r.getMessage() for r in caplog.records if r.name == "sidecar.runtime.scheduler"]
    assert line.startswith(f"optimize {SPEC.name}: run 1 failed after 2 iterations: ")
    assert f"reflection model call failed: {MISSING}." in line
    assert metric_value(metrics, "optimization_runs_total", outcome="failed") == 1
    assert metric_value(metrics, "optimization_runs_total", outcome="finished") == 0


# --- judge-eval -------------------------------------------------------------------------------


def test_judge_eval_that_judged_nothing_exits_1_naming_the_last_error(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    rows = [{"inputs": {"q": "Where?"}, "output": f"Reply {i}.", "label": i % 2} for i in range(4)]
    labels.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = {
        "SIDECAR_JUDGE_MODEL": "openai/local",
        "SIDECAR_JUDGE_API_BASE": closed_base(),
        "SIDECAR_LLM_MAX_RETRIES": "0",
    }
    result = sidecar(tmp_path, "judge-eval", "--labels", str(labels), **env)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: judge-eval: the judge scored none of the 4 examples; the last error: "
        "judge model call failed: APIConnectionError: Connection error."
    )
    assert "None" not in result.stdout and "0.000" not in result.stdout
    assert "accuracy   n/a (nothing judged)" in result.stdout


def test_judge_eval_gating_on_an_undefined_kappa_says_so_in_words(
    tmp_path: Path, llm_server: LlmServer
) -> None:
    labels = tmp_path / "labels.jsonl"  # every label 1 and every score 1: kappa is undefined
    rows = [{"inputs": {"q": "Where?"}, "output": "score=1.0", "label": 1} for _ in range(3)]
    labels.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = {"SIDECAR_JUDGE_MODEL": "openai/local", "SIDECAR_JUDGE_API_BASE": llm_server.api_base}
    result = sidecar(tmp_path, "judge-eval", "--labels", str(labels), "--min-kappa", "0.5", **env)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: kappa is undefined (the labels or the judge's scores are all one category), "
        "so it cannot reach --min-kappa 0.5"
    )
    assert "None" not in result.stdout + result.stderr
