"""`gepa-sidecar doctor` against real parts: the broker, SQLite and PostgreSQL, our model
server. One line per check, exit 1 on any failure, and nothing written anywhere."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from sqlalchemy import inspect

from sidecar.runtime.broker import free_port
from sidecar.store.database import create_database_engine, head_revision, migrate
from tests.cli_helpers import prepare_database, sidecar
from tests.conftest import Topics
from tests.helpers import wait_until
from tests.llm_server import LlmServer

TEMPLATE = """prompts:
  - name: customer-care
    seed: {system_prompt: "You help customers."}
    task:
      messages:
        - {role: system, content: "{system_prompt}"}
        - {role: user, content: "%s"}
"""


def settings_for(
    tmp_path: Path,
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
    llm_server: LlmServer,
    user_content: str = "{user_message}",
) -> dict[str, str]:
    config = tmp_path / "prompts.yaml"
    config.write_text(TEMPLATE % user_content)
    return {
        "SIDECAR_DATABASE_URL": database_url,
        "SIDECAR_CONFIG_FILE": str(config),
        "SIDECAR_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SIDECAR_TRAFFIC_TOPIC": topics.traffic,
        "SIDECAR_DLQ_TOPIC": topics.dlq,
        "SIDECAR_CONSUMER_GROUP": topics.group,
        "SIDECAR_PUBLISH_TARGETS": "file",
        "SIDECAR_JUDGE_MODEL": "openai/judge",
        "SIDECAR_JUDGE_API_BASE": llm_server.api_base,
    }


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """Each check's lines (status and detail), by check name."""
    found: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        status, rest = line[:4].strip(), line[6:]
        check, _, detail = rest.partition("  ")
        found.setdefault(check.strip(), []).append(f"{status} {detail.strip()}")
    return found


def test_a_working_setup_passes_every_check(
    tmp_path: Path,
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
    llm_server: LlmServer,
) -> None:
    prepare_database(database_url)
    settings = settings_for(tmp_path, database_url, kafka_bootstrap, topics, llm_server)
    result = sidecar(tmp_path, "doctor", **settings)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert set(found) == {
        "settings",
        "config",
        "database",
        "prompt customer-care",
        "kafka",
        "group",
        "model judge",
        "model task",
        "model reflection",
    }, result.stdout
    assert found["settings"][1] == (
        "ok task and reflection use the judge's model openai/judge "
        "(SIDECAR_TASK_MODEL, SIDECAR_REFLECTION_MODEL not set)"
    )
    assert found["prompt customer-care"] == [
        "ok template names {user_message}, all in recent events' inputs"
    ]
    assert found["database"][0].startswith("ok ") and "schema at" in found["database"][0]
    assert found["kafka"][0].startswith(f"ok {kafka_bootstrap}: reachable; topics: ")
    assert f"{topics.dlq} (2 partition(s))" in found["kafka"][0]
    assert found["group"] == [f"ok {topics.group}: Empty, 0 member(s)"]
    assert found["model judge"][0].startswith(f"ok openai/judge at {llm_server.api_base}: answered")
    assert found["model task"] == [
        f"ok openai/judge at {llm_server.api_base}: the same model as judge"
    ]
    assert llm_server.requests["ok"] == 1  # one tiny call for the three roles that share a model


def test_the_groups_state_is_read_from_the_embedded_broker(
    tmp_path: Path, sqlite_url: str, kafka_bootstrap: str, topics: Topics, llm_server: LlmServer
) -> None:
    """kafka-python's describe_groups cannot read the embedded broker's answer; doctor's can."""
    prepare_database(sqlite_url)
    settings = settings_for(tmp_path, sqlite_url, kafka_bootstrap, topics, llm_server)
    member = KafkaConsumer(topics.traffic, bootstrap_servers=kafka_bootstrap, group_id=topics.group)
    try:

        def joined() -> bool:
            member.poll(200)
            return bool(member.assignment())

        wait_until(joined, 60, "the consumer to join the group")
        result = sidecar(tmp_path, "doctor", "--no-models", **settings)
    finally:
        member.close()
    assert result.returncode == 0, result.stdout
    assert lines(result)["group"] == [f"ok {topics.group}: Stable, 1 member(s)"]


def test_every_failure_is_a_line_and_exit_1(
    tmp_path: Path, sqlite_url: str, kafka_bootstrap: str, topics: Topics, llm_server: LlmServer
) -> None:
    """A model nobody serves, a placeholder the traffic never carries, topics that are not
    there: each is named, and each check still runs."""
    prepare_database(sqlite_url)
    settings = settings_for(
        tmp_path, sqlite_url, kafka_bootstrap, topics, llm_server, "{user_mesage}"
    )
    settings["SIDECAR_JUDGE_API_BASE"] = f"http://127.0.0.1:{free_port()}/v1"
    settings["SIDECAR_TRAFFIC_TOPIC"] = topics.traffic + "-missing"
    result = sidecar(tmp_path, "doctor", **settings)
    assert result.returncode == 1, result.stdout + result.stderr
    found = lines(result)
    assert found["prompt customer-care"] == [
        "FAIL task.messages names {user_mesage}, which no recent event's inputs carry "
        "(they carry: user_message)"
    ]
    assert (
        found["kafka"][0].startswith("warn ")
        and f"{topics.traffic}-missing missing" in (found["kafka"][0])
    )
    assert found["model judge"][0].startswith("FAIL openai/judge at http://127.0.0.1:")
    assert "judge model call failed: " in found["model judge"][0]
    assert found["model task"][0].startswith("FAIL ")
    assert found["database"][0].startswith("ok ")
    assert result.stderr == ""  # the report is the output: no log line repeats a finding


def test_an_empty_database_fails_and_stays_empty(
    tmp_path: Path, kafka_bootstrap: str, topics: Topics, llm_server: LlmServer
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    url = f"sqlite:///{empty}"
    settings = settings_for(tmp_path, url, kafka_bootstrap, topics, llm_server)
    result = sidecar(tmp_path, "doctor", "--no-models", **settings)
    assert result.returncode == 1
    assert lines(result)["database"] == [
        f"FAIL SIDECAR_DATABASE_URL: the database at {empty} has no sidecar schema (start "
        "`gepa-sidecar run` once to create it)"
    ]
    assert empty.stat().st_size == 0
    missing = tmp_path / "missing.db"
    settings["SIDECAR_DATABASE_URL"] = f"sqlite:///{missing}"
    result = sidecar(tmp_path, "doctor", "--no-models", **settings)
    assert result.returncode == 1 and "no database file yet" in result.stdout
    assert not missing.exists()


def test_an_outdated_schema_is_named_and_left_as_it_is(
    tmp_path: Path, database_url: str, kafka_bootstrap: str, topics: Topics, llm_server: LlmServer
) -> None:
    engine = create_database_engine(database_url)
    migrate(engine, "0005")
    tables = set(inspect(engine).get_table_names())
    settings = settings_for(tmp_path, database_url, kafka_bootstrap, topics, llm_server)
    result = sidecar(tmp_path, "doctor", "--no-models", **settings)
    assert result.returncode == 1
    [line] = lines(result)["database"]
    assert line.startswith("FAIL ")
    assert line.endswith(
        f"is at revision 0005, this gepa-sidecar needs {head_revision()}: run `gepa-sidecar run` "
        "(it migrates at start)"
    )
    assert set(inspect(engine).get_table_names()) == tables
    engine.dispose()


def test_no_broker_setting_and_no_broker_are_failures(
    tmp_path: Path, sqlite_url: str, kafka_bootstrap: str, topics: Topics, llm_server: LlmServer
) -> None:
    prepare_database(sqlite_url)
    settings = settings_for(tmp_path, sqlite_url, kafka_bootstrap, topics, llm_server)
    del settings["SIDECAR_KAFKA_BOOTSTRAP_SERVERS"]
    result = sidecar(tmp_path, "doctor", "--no-models", **settings)
    assert result.returncode == 1
    assert lines(result)["kafka"] == [
        "FAIL SIDECAR_KAFKA_BOOTSTRAP_SERVERS: not set (`run` needs it; `demo` starts an "
        "embedded broker)"
    ]
    settings["SIDECAR_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"
    result = sidecar(tmp_path, "doctor", "--no-models", **settings)
    assert result.returncode == 1
    [line] = lines(result)["kafka"]
    assert line.startswith("FAIL "), result.stdout


def test_bad_settings_stop_at_the_first_line_and_json_says_so(tmp_path: Path) -> None:
    result = sidecar(tmp_path, "doctor", "--json", SIDECAR_SAMPLE_RATE="2", SIDECAR_JUDGE_MODLE="x")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["checks"] == [
        {
            "check": "settings",
            "status": "fail",
            "detail": "SIDECAR_SAMPLE_RATE: Input should be less than or equal to 1 (got '2')",
        },
        {
            "check": "settings",
            "status": "warn",
            "detail": "SIDECAR_JUDGE_MODLE is not a setting and is ignored: did you mean "
            "SIDECAR_JUDGE_MODEL?",
        },
    ]


@pytest.mark.parametrize("flag", ["--version", "-h"])
def test_version_and_short_help(tmp_path: Path, flag: str) -> None:
    result = sidecar(tmp_path, flag)
    assert result.returncode == 0, result.stderr
    if flag == "--version":
        from sidecar import __version__

        assert result.stdout == f"gepa-sidecar {__version__}\n"
    else:
        assert "doctor" in result.stdout and "Usage: " in result.stdout


def test_a_misspelled_variable_is_warned_about_before_the_command_runs(tmp_path: Path) -> None:
    result = sidecar(tmp_path, "status", SIDECAR_DATABSE_URL="sqlite:///x.db")
    assert result.stderr.splitlines()[0] == (
        "warning: SIDECAR_DATABSE_URL is not a setting and is ignored: did you mean "
        "SIDECAR_DATABASE_URL?"
    )
