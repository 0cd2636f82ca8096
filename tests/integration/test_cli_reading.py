"""`optimize`, the reading commands (`candidates`, `show`, `diff`, `lineage`) and `shadow` as a
user runs them: real subprocesses on a SQLite file seeded with the test world."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from sidecar.store.candidates import insert_candidate
from sidecar.store.database import create_database_engine, migrate
from sidecar.store.repository import seed_prompt
from tests.cli_helpers import (
    COMMAND_TIMEOUT_S,
    assert_one_line_error,
    environment,
    prepare_database,
    sidecar,
)
from tests.llm_server import LlmServer
from tests.world import SEED, TWO_PART, seed_world, world_environment


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
    spent = status["spend"]["optimize"]["last_hour"]  # the simulated models have no price
    assert spent["calls"] == spent["unpriced_calls"] >= report["metric_calls"]
    assert (spent["cost_usd"], spent["known"]) == (0.0, False)


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
    status = json.loads(sidecar(tmp_path, "status", "--json", **env).stdout)
    shadow_spend = status["spend"]["shadow"]["last_day"]
    assert shadow_spend["calls"] == shadow_spend["unpriced_calls"] >= 24
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
