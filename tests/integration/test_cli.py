"""The `gepa-sidecar` command as a user runs it: real subprocesses, a controlled environment."""

from __future__ import annotations

import json
import os
import pty
import queue
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient

from sidecar.events import ConsumedEvent, TrafficEvent
from sidecar.runtime.broker import free_port
from sidecar.store.candidates import insert_candidate
from sidecar.store.database import create_database_engine, migrate
from sidecar.store.repository import seed_prompt, store_events
from tests.helpers import encode, make_event, scaled
from tests.llm_server import LlmServer
from tests.world import SEED, TWO_PART, seed_world, world_environment

# Deadlock guards, not speed limits: a cold `optimize` (importing litellm) took 15 s idle and
# 36.5 s on a busy 2-core machine.
COMMAND_TIMEOUT_S = scaled(60)
BROKER_READY_S = scaled(40)
BROKER_EXIT_S = scaled(20)
EVENT_KEYS = {"accepted", "sampled_out", "invalid", "duplicate", "judged", "judge_errors"}
OPTIMIZATION_KEYS = {"runs", "metric_calls", "cost_usd"}


def environment(**settings: str) -> dict[str, str]:
    """The test's environment without any SIDECAR_* variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def sidecar(cwd: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m sidecar ARGS` in `cwd` (where no .env exists)."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        cwd=cwd,
        env=environment(**settings),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.strip()
    for name in names:
        assert name in line
    return line


def prepare_database(url: str) -> None:
    """A database as a running sidecar leaves it: 5 accepted events and the seed prompt."""
    rng = random.Random(5)
    now = datetime.now(UTC)
    batch = [
        ConsumedEvent(TrafficEvent.model_validate_json(encode(make_event(rng))), 0, offset)
        for offset in range(5)
    ]
    engine = create_database_engine(url)
    try:
        migrate(engine)
        store_events(engine, batch, {}, now)
        seed_prompt(engine, "customer-care", {"system_prompt": "You help customers."}, now)
    finally:
        engine.dispose()


# --- bad settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIDECAR_SAMPLE_RATE", "2"),
        ("SIDECAR_HTTP_PORT", "notaport"),
        ("SIDECAR_DATABASE_URL", "mysql://x"),
    ],
)
def test_run_refuses_a_bad_setting_in_one_line(tmp_path: Path, name: str, value: str) -> None:
    result = sidecar(
        tmp_path, "run", SIDECAR_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", **{name: value}
    )
    assert_one_line_error(result, name)
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
    ],
    ids=["empty-seed", "not-yaml", "bad-name"],
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


# --- optimize and the reading commands ----------------------------------------------------------


def world_database(tmp_path: Path, llm_server: LlmServer) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'world.db'}"
    engine = create_database_engine(url)
    migrate(engine)
    seed_world(engine, llm_server, 24)
    engine.dispose()
    return {**world_environment(llm_server, tmp_path), "SIDECAR_DATABASE_URL": url}


def test_optimize_then_read_what_it_did(tmp_path: Path, llm_server: LlmServer) -> None:
    env = world_database(tmp_path, llm_server)
    ran = sidecar(tmp_path, "optimize", "--json", **env)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["best_score"] == 1.0 and report["proposed"]
    assert "iteration   1" in ran.stderr  # progress, on stderr
    best = report["best_version"]

    listed = json.loads(
        sidecar(tmp_path, "candidates", "--status", "proposed", "--json", **env).stdout
    )
    assert [view["version"] for view in listed] == report["proposed"]
    shown = json.loads(sidecar(tmp_path, "show", str(best), "--json", **env).stdout)
    assert {"version", "status", "components", "parents", "flags", "evidence"} <= set(shown)
    assert (shown["status"], shown["mean_score"]) == ("proposed", 1.0)

    changed = sidecar(tmp_path, "diff", "1", str(best), **env).stdout
    assert "+Always end by naming the next step." in changed
    tree = sidecar(tmp_path, "lineage", **env).stdout.splitlines()
    assert tree[0].startswith("v1  [active]  score 0.000")
    assert any(line.startswith("    v2  [") for line in tree)

    status = json.loads(sidecar(tmp_path, "status", "--json", **env).stdout)
    assert status["optimization"]["runs"] == 1
    assert status["optimization"]["metric_calls"] == report["metric_calls"]


def test_reading_commands_refuse_unknown_versions_and_prompts(
    tmp_path: Path, llm_server: LlmServer
) -> None:
    env = world_database(tmp_path, llm_server)
    assert_one_line_error(sidecar(tmp_path, "show", "99", **env), "VERSION", "99")
    assert_one_line_error(sidecar(tmp_path, "diff", "1", "42", **env), "VERSION", "42")
    assert_one_line_error(sidecar(tmp_path, "lineage", "--prompt", "nope", **env), "--prompt")


NEW_SYSTEM_PROMPT = f"{SEED} Always end by naming the next step."


def two_part_database(tmp_path: Path, llm_server: LlmServer) -> dict[str, str]:
    """TWO_PART's seed as v1 and a v2 with a new system prompt and the same closing."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    engine = create_database_engine(url)
    try:
        migrate(engine)
        now = datetime.now(UTC)
        seed_prompt(engine, TWO_PART.name, dict(TWO_PART.seed), now)
        changed = {**TWO_PART.seed, "system_prompt": NEW_SYSTEM_PROMPT}
        insert_candidate(engine, TWO_PART.name, changed, [1], None, "name the step", [], now)
    finally:
        engine.dispose()
    config = tmp_path / "two_part.yaml"
    config.write_text(yaml.safe_dump({"prompts": [TWO_PART.model_dump(exclude_none=True)]}))
    env = world_environment(llm_server, tmp_path)
    return {**env, "SIDECAR_CONFIG_FILE": str(config), "SIDECAR_DATABASE_URL": url}


def test_diff_json_gives_each_component_and_the_text_is_its_sections(
    tmp_path: Path, llm_server: LlmServer
) -> None:
    env = two_part_database(tmp_path, llm_server)
    result = sidecar(tmp_path, "diff", "1", "2", "--json", **env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["prompt"], report["a"], report["b"]) == ("customer-care", 1, 2)
    components = report["components"]
    assert components["closing"] == {
        "changed": False,
        "diff": "",
        "before": "Be brief.",
        "after": "Be brief.",
    }
    system = components["system_prompt"]
    assert (system["changed"], system["before"], system["after"]) == (True, SEED, NEW_SYSTEM_PROMPT)
    assert system["diff"].startswith("--- v1/system_prompt\n+++ v2/system_prompt\n")
    assert "+Always end by naming the next step." in system["diff"].splitlines()

    text = sidecar(tmp_path, "diff", "1", "2", **env)
    assert text.returncode == 0, text.stderr
    assert text.stdout == f"closing: unchanged\n{system['diff']}\n"
    unknown = sidecar(tmp_path, "diff", "1", "42", "--json", **env)
    assert_one_line_error(unknown, "VERSION", "42")
    assert unknown.stdout == ""


def test_optimize_without_judged_traffic_says_so(tmp_path: Path, llm_server: LlmServer) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    prepare_database(url)
    env = {**world_environment(llm_server, tmp_path), "SIDECAR_DATABASE_URL": url}
    result = sidecar(tmp_path, "optimize", **env)
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1].startswith("error: customer-care: 0 judged events")
    )


def drain_until_closed(
    process: subprocess.Popen[bytes], terminal: int, timeout: float
) -> tuple[bytes, bytes]:
    """Read the pty's master side and the child's stdout while the child runs, until both are
    closed (EIO on the master once no process holds the child side, EOF on the pipe). A child
    writing to a pty that nobody reads blocks once the pty's buffer is full."""
    assert process.stdout is not None
    stdout = process.stdout.fileno()
    read: dict[int, bytearray] = {terminal: bytearray(), stdout: bytearray()}
    still_open = {terminal, stdout}
    deadline = time.monotonic() + timeout
    while still_open:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"the child's output was not closed within {timeout:g}s")
        ready, _, _ = select.select(sorted(still_open), [], [], remaining)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's child side is closed and everything was read
                chunk = b""
            if chunk:
                read[fd] += chunk
            else:
                still_open.discard(fd)
    return bytes(read[terminal]), bytes(read[stdout])


def test_optimize_on_a_terminal_draws_a_progress_bar(tmp_path: Path, llm_server: LlmServer) -> None:
    env = world_database(tmp_path, llm_server)
    terminal, child_side = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "optimize"],
            cwd=tmp_path,
            env=environment(**env, COLUMNS="160"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=child_side,
        )
    finally:
        os.close(child_side)  # the child holds its own copy: EIO comes when it exits
    try:
        drawn, printed = drain_until_closed(process, terminal, COMMAND_TIMEOUT_S)
        returncode = process.wait(timeout=COMMAND_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
        os.close(terminal)
    screen = drawn.decode(errors="replace")
    assert returncode == 0, screen
    assert "optimizing" in screen and "metric calls" in screen and "frontier" in screen
    assert "iteration" not in screen  # the bar replaces the log lines
    assert "proposed v" in printed.decode()


# --- shadow -------------------------------------------------------------------------------------


def test_shadow_runs_one_pass_now(tmp_path: Path, llm_server: LlmServer) -> None:
    from sidecar.store.candidates import mark_proposed
    from tests.world import live_traffic

    env = world_database(tmp_path, llm_server)
    engine = create_database_engine(env["SIDECAR_DATABASE_URL"])
    try:  # a proposed version that names the next step, then 12 events it never saw
        now = datetime.now(UTC)
        text = f"{SEED} Always end by naming the next step."
        better = insert_candidate(
            engine, "customer-care", {"system_prompt": text}, [1], None, "", [], now
        )
        mark_proposed(engine, "customer-care", [better.version], "beat the champion", now)
        live_traffic(engine, llm_server, 12, seed=2)
    finally:
        engine.dispose()

    waiting = sidecar(tmp_path, "shadow", **env, SIDECAR_SHADOW_MIN_PAIRS="50")
    assert waiting.returncode == 0, waiting.stderr
    assert waiting.stdout.splitlines() == [
        "customer-care: pointwise shadow pass against champion v1; 24 metric calls, $0.0000",
        f"v{better.version}  proposed -> shadow  12 pairs  mean delta +0.500  "
        "collecting: 12 of 50 pairs",
    ]
    passed = sidecar(tmp_path, "shadow", "--json", **env, SIDECAR_SHADOW_MIN_PAIRS="10")
    assert passed.returncode == 0, passed.stderr
    report = json.loads(passed.stdout)
    assert (report["prompt"], report["mode"], report["champion_version"]) == (
        "customer-care",
        "pointwise",
        1,
    )
    assert (report["metric_calls"], report["stop_reason"]) == (0, None)  # replays cached
    [outcome] = report["candidates"]
    assert {k: outcome[k] for k in ("version", "status_before", "status_after", "pairs")} == {
        "version": better.version,
        "status_before": "shadow",
        "status_after": "awaiting_approval",
        "pairs": 12,
    }
    assert (outcome["mean_delta"], outcome["decision"]) == (0.5, "pass")
    assert outcome["p_value"] < 0.05 and outcome["reason"].startswith("passed:")
    shown = json.loads(sidecar(tmp_path, "show", str(better.version), "--json", **env).stdout)
    assert (shown["status"], shown["evidence"]["shadow"]["n"]) == ("awaiting_approval", 12)

    assert_one_line_error(sidecar(tmp_path, "shadow", "--prompt", "nope", **env), "'nope'")
    unconfigured = {k: v for k, v in env.items() if k != "SIDECAR_CONFIG_FILE"}
    assert_one_line_error(sidecar(tmp_path, "shadow", **unconfigured), "SIDECAR_CONFIG_FILE")
    missing = {**env, "SIDECAR_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"}
    assert_one_line_error(sidecar(tmp_path, "shadow", **missing), "SIDECAR_DATABASE_URL")
    assert not (tmp_path / "none.db").exists()
