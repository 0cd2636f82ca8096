"""The reading commands (`status`, `candidates`, `show`, `diff`, `lineage`, `export`) as a user
runs them: real subprocesses on a real SQLite file and PostgreSQL. They never migrate or write,
they work from the database alone (the config file only narrows), and they say what is known of
a version: its replayed mean, and apart from it, the live mean production's judgments give."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect

from sidecar.promote.lifecycle import Status
from sidecar.store.candidates import insert_candidate
from sidecar.store.database import create_database_engine, head_revision, migrate, schema_state
from sidecar.store.judgments import judgments_for
from sidecar.store.repository import seed_prompt
from tests.cli_helpers import SEED, assert_one_line_error, prepared, sidecar
from tests.integration.test_cli_reading import world_database
from tests.integration.test_store_schema import previous_revision
from tests.llm_server import LlmServer
from tests.versions import NAME

READING = [
    ("status",),
    ("candidates",),
    ("show", "1"),
    ("diff", "1", "1"),
    ("lineage",),
    ("export", "1"),
]


def empty_database(url: str) -> Callable[[], object]:
    """Create the empty database `url` names (a zero-byte SQLite file, or an empty PostgreSQL
    schema); returns what to compare before and after: the file's bytes, or its tables."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        path.write_bytes(b"")
        return path.read_bytes

    def tables() -> object:
        engine = create_engine(url)
        try:
            return inspect(engine).get_table_names()
        finally:
            engine.dispose()

    return tables


@pytest.mark.parametrize("command", READING, ids=lambda command: command[0])
def test_a_reading_command_leaves_an_empty_database_as_it_was(
    tmp_path: Path, database_url: str, command: tuple[str, ...]
) -> None:
    contents = empty_database(database_url)
    before = contents()
    assert before in (b"", [])
    result = sidecar(tmp_path, *command, SIDECAR_DATABASE_URL=database_url)
    line = assert_one_line_error(result, "SIDECAR_DATABASE_URL", "has no sidecar schema")
    assert "start `gepa-sidecar run` once to create it" in line
    assert result.stdout == ""
    assert contents() == before


@pytest.mark.parametrize("command", READING, ids=lambda command: command[0])
def test_a_reading_command_refuses_an_outdated_schema_and_leaves_it(
    tmp_path: Path, database_url: str, command: tuple[str, ...]
) -> None:
    previous = previous_revision()
    engine = create_database_engine(database_url)
    try:
        migrate(engine, previous)
        result = sidecar(tmp_path, *command, SIDECAR_DATABASE_URL=database_url)
        line = assert_one_line_error(result, "SIDECAR_DATABASE_URL", "run `gepa-sidecar run`")
        assert f"is at revision {previous}, this gepa-sidecar needs {head_revision()}" in line
        assert result.stdout == ""
        assert schema_state(engine).current == previous
    finally:
        engine.dispose()


# --- from the database alone -------------------------------------------------------------------


def test_reading_commands_work_from_the_database_alone(
    tmp_path: Path, database_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine, configured = prepared(tmp_path, database_url, migrated_engine)
    changed = {"system_prompt": "You help customers, and name the next step."}
    insert_candidate(engine, NAME, changed, [1], None, "name the step", [], datetime.now(UTC))
    env = {"SIDECAR_DATABASE_URL": database_url}  # no SIDECAR_CONFIG_FILE

    listed = sidecar(tmp_path, "candidates", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    assert [(v["version"], v["status"]) for v in json.loads(listed.stdout)] == [
        (1, "active"),
        (2, "pool"),
    ]
    shown = sidecar(tmp_path, "show", "2", "--json", **env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["components"] == changed
    changes = sidecar(tmp_path, "diff", "1", "2", **env)
    assert changes.returncode == 0, changes.stderr
    assert "+You help customers, and name the next step." in changes.stdout
    tree = sidecar(tmp_path, "lineage", **env)
    assert tree.returncode == 0, tree.stderr
    assert tree.stdout.splitlines()[1].startswith("    v2  [pool]")
    exported = sidecar(tmp_path, "export", "2", **env)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["components"] == changed
    # the same answers with the config file, which here names the same one prompt
    assert sidecar(tmp_path, "candidates", "--json", **configured).stdout == listed.stdout


def test_several_prompts_need_prompt_and_the_config_file_narrows(
    tmp_path: Path, database_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine, configured = prepared(tmp_path, database_url, migrated_engine)
    seed_prompt(engine, "billing", {"system_prompt": "You explain bills."}, datetime.now(UTC))
    env = {"SIDECAR_DATABASE_URL": database_url}
    for command in [c for c in READING if c[0] != "status"]:
        several = sidecar(tmp_path, *command, **env)
        assert_one_line_error(several, "--prompt", "several prompts", "billing, customer-care")
    billing = sidecar(tmp_path, "show", "1", "--prompt", "billing", "--json", **env)
    assert billing.returncode == 0, billing.stderr
    assert json.loads(billing.stdout)["name"] == "billing"
    unknown = sidecar(tmp_path, "lineage", "--prompt", "nope", **env)
    assert_one_line_error(unknown, "--prompt", "'nope'", "billing, customer-care")
    narrowed = sidecar(tmp_path, "show", "1", "--json", **configured)
    assert narrowed.returncode == 0, narrowed.stderr
    assert json.loads(narrowed.stdout)["name"] == NAME


def test_a_database_without_prompts_says_so(
    tmp_path: Path, migrated_engine: Callable[[str], Engine]
) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    migrated_engine(url)
    result = sidecar(tmp_path, "candidates", SIDECAR_DATABASE_URL=url)
    assert_one_line_error(result, "SIDECAR_DATABASE_URL", "no prompt")


# --- what is shown -----------------------------------------------------------------------------


def test_candidates_refuses_an_unknown_status_naming_the_valid_ones(
    tmp_path: Path, migrated_engine: Callable[[str], Engine]
) -> None:
    _, env = prepared(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", migrated_engine)
    bogus = sidecar(tmp_path, "candidates", "--status", "bogus", **env)
    line = assert_one_line_error(bogus, "--status", "'bogus'", *[status.value for status in Status])
    assert bogus.stdout == ""
    assert line.startswith("error: --status: must be one of pool, proposed,")
    active = sidecar(tmp_path, "candidates", "--status", "active", "--json", **env)
    assert [view["version"] for view in json.loads(active.stdout)] == [1]
    assert (
        json.loads(sidecar(tmp_path, "candidates", "--status", "pool", "--json", **env).stdout)
        == []
    )


def test_a_version_with_judged_traffic_shows_its_live_mean_apart_from_its_replayed_one(
    tmp_path: Path, llm_server: LlmServer
) -> None:
    env = world_database(tmp_path, llm_server)  # v1 active, 24 production answers judged
    engine = create_database_engine(env["SIDECAR_DATABASE_URL"])
    try:
        judged = judgments_for(engine, NAME)
    finally:
        engine.dispose()
    assert len(judged) == 24
    mean = sum(j.score or 0.0 for j in judged) / len(judged)
    expected = {
        "mean_score": round(mean, 4),
        "judged_events": 24,
        "judge_version": judged[0].judge_version,
    }
    unconfigured = {k: v for k, v in env.items() if k != "SIDECAR_CONFIG_FILE"}
    for settings in (env, unconfigured):
        [view] = json.loads(sidecar(tmp_path, "candidates", "--json", **settings).stdout)
        assert (view["version"], view["mean_score"], view["evaluations"]) == (1, None, 0)
        assert view["live"] == expected
        [line] = sidecar(tmp_path, "candidates", **settings).stdout.splitlines()
        assert "replay unscored" in line and f"live {mean:.3f} (24 events)" in line
        shown = sidecar(tmp_path, "show", "1", **settings).stdout.splitlines()
        assert (
            f"score: replay unscored; live {mean:.3f} over 24 judged production events "
            "(monitoring, not a replay score)"
        ) in shown
        assert json.loads(sidecar(tmp_path, "show", "1", "--json", **settings).stdout) == view


def test_a_version_without_judged_traffic_has_no_live_mean(
    tmp_path: Path, migrated_engine: Callable[[str], Engine]
) -> None:
    _, env = prepared(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", migrated_engine)
    [view] = json.loads(sidecar(tmp_path, "candidates", "--json", **env).stdout)
    assert (view["mean_score"], view["live"]) == (None, None)
    assert view["components"] == SEED
