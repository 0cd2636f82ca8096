"""The `gepa-sidecar` command as a user runs it (settings, status, help, broker, judge-eval): real
subprocesses, a controlled environment."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from sidecar.runtime.broker import free_port
from tests.cli_helpers import assert_one_line_error, environment, prepare_database, sidecar
from tests.helpers import scaled
from tests.llm_server import LlmServer

# Deadlock guards, not speed limits.
BROKER_READY_S = scaled(40)
BROKER_EXIT_S = scaled(20)
EVENT_KEYS = {
    "accepted",
    "sampled_out",
    "invalid",
    "duplicate",
    "judged",
    "judge_errors",
    "expired",
}
SPEND_NONE = {"cost_usd": 0.0, "calls": 0, "unpriced_calls": 0, "known": True}
OPTIMIZATION_KEYS = {"runs", "metric_calls", "cost_usd"}


# --- bad settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIDECAR_SAMPLE_RATE", "2"),
        ("SIDECAR_HTTP_PORT", "notaport"),
        ("SIDECAR_DATABASE_URL", "mysql://x"),
        ("SIDECAR_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("SIDECAR_KAFKA_SASL_MECHANISM", "PLAIN"),  # with PLAINTEXT: unused, so refused
        ("SIDECAR_LOG_FORMAT", "xml"),
        ("SIDECAR_LOG_LEVEL", "loud"),
        ("SIDECAR_KAFKA_AUTO_OFFSET_RESET", "beginning"),
    ],
)
def test_run_refuses_a_bad_setting_in_one_line(tmp_path: Path, name: str, value: str) -> None:
    result = sidecar(
        tmp_path, "run", SIDECAR_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", **{name: value}
    )
    assert_one_line_error(result, name)
    assert list(tmp_path.iterdir()) == []


def test_run_refuses_a_sasl_protocol_without_its_credentials_in_one_line(
    tmp_path: Path,
) -> None:
    result = sidecar(
        tmp_path,
        "run",
        SIDECAR_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        SIDECAR_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        SIDECAR_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        SIDECAR_KAFKA_SASL_PASSWORD="s3cret",
    )
    line = assert_one_line_error(result, "SIDECAR_KAFKA_SASL_USERNAME", "SASL_SSL")
    assert "s3cret" not in line
    assert list(tmp_path.iterdir()) == []


def test_run_without_bootstrap_servers_names_the_setting(tmp_path: Path) -> None:
    result = sidecar(tmp_path, "run", SIDECAR_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    assert_one_line_error(result, "SIDECAR_KAFKA_BOOTSTRAP_SERVERS")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    "text",
    [
        "prompts:\n  - name: customer-care\n    seed: {}\n",
        "prompts: [unclosed\n  - {name: x",
        "prompts:\n  - name: has space\n    seed: {system_prompt: hi}\n",
        "prompts:\n  - name: x\n    seed: {system_prompt: hi}\n    task:\n      messages:\n"
        "        - {role: system, content: '{system_promt}'}\n",
        "prompts:\n  - name: x\n    seed: {system_prompt: hi}\n    task:\n      messages:\n"
        "        - {role: sytem, content: '{system_prompt}'}\n",
    ],
    ids=["empty-seed", "not-yaml", "bad-name", "placeholder-typo", "role-typo"],
)
def test_run_refuses_a_bad_config_file(tmp_path: Path, text: str) -> None:
    config = tmp_path / "prompts.yaml"
    config.write_text(text, encoding="utf-8")
    result = sidecar(
        tmp_path,
        "run",
        SIDECAR_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        SIDECAR_CONFIG_FILE=str(config),
        SIDECAR_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
    )
    assert_one_line_error(result, "SIDECAR_CONFIG_FILE", str(config))
    assert not (tmp_path / "x.db").exists()


def test_status_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = sidecar(tmp_path, "status", SIDECAR_DATABASE_URL=f"sqlite:///{missing}")
    assert_one_line_error(result, "SIDECAR_DATABASE_URL", str(missing))
    assert not missing.exists()
    assert result.stdout == ""


# --- status -----------------------------------------------------------------------------------


def check_status_json(stdout: str) -> None:
    summary = json.loads(stdout)
    assert set(summary["events"]) == EVENT_KEYS
    assert summary["events"]["accepted"] == 5
    assert summary["events"]["duplicate"] == 0
    assert set(summary["optimization"]) == OPTIMIZATION_KEYS
    assert summary["optimization"]["runs"] == 0
    assert summary["prompts"]["customer-care"]["active_version"] == 1
    assert summary["spend"] == {
        purpose: {"last_hour": SPEND_NONE, "last_day": SPEND_NONE}
        for purpose in ("judge", "shadow", "optimize")
    }


def test_status_json_on_sqlite(tmp_path: Path, sqlite_url: str) -> None:
    prepare_database(sqlite_url)
    result = sidecar(tmp_path, "status", "--json", SIDECAR_DATABASE_URL=sqlite_url)
    assert result.returncode == 0, result.stderr
    check_status_json(result.stdout)


def test_status_json_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    prepare_database(postgres_url)
    result = sidecar(tmp_path, "status", "--json", SIDECAR_DATABASE_URL=postgres_url)
    assert result.returncode == 0, result.stderr
    check_status_json(result.stdout)


def test_status_prints_human_text(tmp_path: Path, sqlite_url: str) -> None:
    prepare_database(sqlite_url)
    result = sidecar(tmp_path, "status", SIDECAR_DATABASE_URL=sqlite_url)
    assert result.returncode == 0, result.stderr
    assert "accepted=5" in result.stdout
    assert "customer-care" in result.stdout
    assert "active_version=1" in result.stdout
    assert "spend      last hour  judge=$0.0000  shadow=$0.0000  optimize=$0.0000" in (
        result.stdout
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = sidecar(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "broker", "status", "demo"):
        assert f" {command} " in result.stdout


# --- broker -----------------------------------------------------------------------------------


def lines_of(stream: object) -> queue.Queue[str]:
    """Lines of a pipe, read by a daemon thread so the test can wait with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, name="broker-stdout", daemon=True).start()
    return lines


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "broker", "--port", str(port)],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:  # the test failed before a clean stop: end the whole group
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


def test_broker_serves_the_sidecar_topics_and_stops_on_sigterm(
    broker_process: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = broker_process
    expected = f"SIDECAR_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}"
    lines = lines_of(process.stdout)
    seen: list[str] = []
    while not any(expected in line for line in seen):
        try:
            seen.append(lines.get(timeout=BROKER_READY_S))
        except queue.Empty:
            pytest.fail(f"no {expected!r} within {BROKER_READY_S}s; stdout: {seen}")
    admin = KafkaAdminClient(
        bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=int(scaled(10_000))
    )
    try:
        names = set(admin.list_topics())
    finally:
        admin.close()
    assert {"gepa.traffic", "gepa.traffic.dlq"} <= names
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=BROKER_EXIT_S) == 0


# --- judge-eval -------------------------------------------------------------------------------

LABELED = [
    # (reply, human label); the test server's judge rule scores these 1.0, 0.25, 0.75, 0.0
    ("Sorry! Next step: your order ships today.", 1),
    ("It ships tomorrow.", 0),
    ("Thanks! Next step: wait.", 0),  # the judge says 0.75 → pass: a disagreement
    ("No.", "fail"),
]


def labels_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.jsonl"
    rows = [
        {"inputs": {"user_message": "Where is my order?"}, "output": reply, "label": label}
        for reply, label in LABELED
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def judge_env(llm_server: LlmServer) -> dict[str, str]:
    return {
        "SIDECAR_JUDGE_MODEL": "openai/local",
        "SIDECAR_JUDGE_API_BASE": llm_server.api_base,
        "SIDECAR_LLM_BACKOFF_BASE_S": "0.01",
    }


def test_judge_eval_reports_agreement_with_labels(tmp_path: Path, llm_server: LlmServer) -> None:
    labels = labels_file(tmp_path)
    result = sidecar(
        tmp_path, "judge-eval", "--labels", str(labels), "--json", **judge_env(llm_server)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 4
    assert report["confusion"] == [[2, 1], [0, 1]]  # rows: human 0/1, columns: judge 0/1
    assert report["accuracy"] == 0.75
    # p_o = 0.75; p_e = (3/4)(2/4) + (1/4)(2/4) = 0.5; kappa = 0.25 / 0.5
    assert report["kappa"] == 0.5
    assert report["judge_errors"] == 0
    assert report["disagreements"][0]["example"] == 3
    assert report["judge_version"].startswith("openai/local#")
    human = sidecar(tmp_path, "judge-eval", "--labels", str(labels), **judge_env(llm_server))
    assert "kappa      0.500" in human.stdout
    assert "accuracy   0.750" in human.stdout


def test_judge_eval_gates_on_kappa(tmp_path: Path, llm_server: LlmServer) -> None:
    labels = str(labels_file(tmp_path))
    env = judge_env(llm_server)
    assert (
        sidecar(tmp_path, "judge-eval", "--labels", labels, "--min-kappa", "0.4", **env).returncode
        == 0
    )
    failed = sidecar(tmp_path, "judge-eval", "--labels", labels, "--min-kappa", "0.6", **env)
    assert failed.returncode == 1
    assert "kappa 0.5 is below --min-kappa 0.6" in failed.stderr


def test_judge_eval_refuses_a_bad_labels_file(tmp_path: Path, llm_server: LlmServer) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"inputs": {"q": "a"}, "output": "x", "label": 1}\n{"output": 1}\n')
    result = sidecar(tmp_path, "judge-eval", "--labels", str(labels), **judge_env(llm_server))
    assert_one_line_error(result, "--labels", "labels.jsonl:2")
    assert llm_server.bodies == []  # nothing was sent to the model


def test_judge_eval_needs_a_known_prompt(tmp_path: Path, llm_server: LlmServer) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "prompts:\n"
        "  - {name: a, seed: {system_prompt: x}, judge: {rubric: 'Be kind.'}}\n"
        "  - {name: b, seed: {system_prompt: y}}\n"
    )
    env = {**judge_env(llm_server), "SIDECAR_CONFIG_FILE": str(config)}
    labels = str(labels_file(tmp_path))
    assert_one_line_error(sidecar(tmp_path, "judge-eval", "--labels", labels, **env), "--prompt")
    unknown = sidecar(tmp_path, "judge-eval", "--labels", labels, "--prompt", "c", **env)
    assert_one_line_error(unknown, "--prompt", "'c'")
    chosen = sidecar(tmp_path, "judge-eval", "--labels", labels, "--prompt", "a", "--json", **env)
    assert json.loads(chosen.stdout)["prompt"] == "a"
    assert "Be kind." in llm_server.bodies[-1]["messages"][-1]["content"]
