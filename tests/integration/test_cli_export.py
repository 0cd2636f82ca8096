"""`export` as a person runs it: real subprocesses against a real SQLite file, the exported
document checked against the store's own and loaded into dspy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
import pytest
from sqlalchemy import Engine

from sidecar.events import PromptDocument, components_sha256
from sidecar.promote.documents import document_for
from sidecar.store.candidates import candidates_of
from tests.cli_helpers import assert_one_line_error, prepared, sidecar
from tests.versions import NAME, add_version, approved


@pytest.fixture
def world(
    tmp_path: Path, sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> tuple[Engine, dict[str, str]]:
    """A database as a running sidecar leaves it (the seed v1 active) and the CLI's settings."""
    return prepared(tmp_path, sqlite_url, migrated_engine)


def test_export_json_is_the_published_document(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "awaiting_approval")
    approved(engine, v2)

    printed = sidecar(tmp_path, "export", str(v2), "--format", "json", **env)
    written = sidecar(tmp_path, "export", str(v2), "--output", str(tmp_path / "v2.json"), **env)

    assert printed.returncode == 0, printed.stderr
    document = PromptDocument.model_validate_json(printed.stdout)
    row = candidates_of(engine, NAME)[v2]
    assert document == document_for(row)
    assert document.sha256 == components_sha256(row.components)
    assert (document.approved_by, document.version) == ("alice", v2)
    assert written.returncode == 0, written.stderr
    assert written.stdout == f"wrote {NAME} v{v2} (json) to {tmp_path / 'v2.json'}\n"
    assert (tmp_path / "v2.json").read_text(encoding="utf-8") == printed.stdout


class CustomerCare(dspy.Module):
    """An app's program with one predictor named like the prompt's component."""

    def __init__(self) -> None:
        super().__init__()
        self.system_prompt = dspy.Predict("user_message -> reply")

    def forward(self, user_message: str) -> Any:
        return self.system_prompt(user_message=user_message)


def test_export_dspy_loads_in_dspy_with_the_instructions_in_place(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "proposed")
    path = tmp_path / "program.json"

    result = sidecar(tmp_path, "export", str(v2), "--format", "dspy", "--output", str(path), **env)
    printed = sidecar(tmp_path, "export", str(v2), "--format", "dspy", **env)

    assert result.returncode == 0, result.stderr
    assert printed.stdout == path.read_text(encoding="utf-8")
    program = CustomerCare()
    program.load(path)
    text = candidates_of(engine, NAME)[v2].components["system_prompt"]
    assert program.system_prompt.signature.instructions == text
    assert json.loads(printed.stdout)["metadata"]["gepa_sidecar"]["version"] == v2


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        (["--format", "xml"], ["--format", "'xml'"]),
        (["--format", "dspy", "--output", "program.txt"], ["--output", ".json", "program.txt"]),
        (["--output", "missing/v2.json"], ["--output", "missing/v2.json"]),
    ],
)
def test_export_refuses_bad_options_in_one_line(
    tmp_path: Path, world: tuple[Engine, dict[str, str]], arguments: list[str], names: list[str]
) -> None:
    engine, env = world
    v2 = add_version(engine, "proposed")
    work = tmp_path / "work"
    work.mkdir()

    result = sidecar(work, "export", str(v2), *arguments, **env)

    assert_one_line_error(result, *names)
    assert result.stdout == ""
    assert list(work.iterdir()) == []


def test_export_of_an_unknown_version_names_it(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    _, env = world
    result = sidecar(tmp_path, "export", "42", **env)
    assert_one_line_error(result, "VERSION", f"{NAME} has no version 42")
    assert result.stdout == ""
