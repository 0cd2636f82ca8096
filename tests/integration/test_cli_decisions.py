"""`approve`, `reject` and `rollback` as a person runs them: real subprocesses against a real
SQLite file (and PostgreSQL for approve and rollback), the world prepared and checked with the
store's own functions. The CLI is a second client: it commits decisions and outbox rows; a running
sidecar's relay delivers them (here, the test marks rows delivered where a relay would)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from sidecar.promote.documents import document_for
from sidecar.store.candidates import candidates_of
from sidecar.store.outbox import mark_delivered, pending_outbox
from sidecar.store.promotions import audit_trail, never_breed
from tests.cli_helpers import (
    COMMAND_TIMEOUT_S,
    assert_one_line_error,
    environment,
    prepared,
    sidecar,
)
from tests.helpers import wait_until
from tests.versions import NAME, add_version, approved, snapshot, statuses

PUBLISHING = (
    "publishing to file, kafka, http: a running sidecar delivers within 1s (`gepa-sidecar status`)"
)
ACTIVATION_KEYS = {"prompt", "version", "status", "previous", "activation_id", "targets", "forced"}


@pytest.fixture
def world(
    tmp_path: Path, sqlite_url: str, migrated_engine: Callable[[str], Engine]
) -> tuple[Engine, dict[str, str]]:
    """A database as a running sidecar leaves it (the seed v1 active) and the CLI's settings."""
    return prepared(tmp_path, sqlite_url, migrated_engine)


def owed(engine: Engine, version: int) -> dict[str, int]:
    """Target -> activation id of the pending outbox rows of `version`."""
    return {i.target: i.activation_id for i in pending_outbox(engine) if i.version == version}


def activation_of(engine: Engine, version: int) -> int:
    """The id of the latest audit row that made `version` active."""
    rows = [a for a in audit_trail(engine, NAME, version) if a.to_status == "active"]
    return int(rows[-1].id or 0)


def decision_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert set(report) == ACTIVATION_KEYS
    return report


# --- approve ----------------------------------------------------------------------------------


def test_approve_activates_a_gated_version_and_owes_it_to_every_target(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "awaiting_approval")

    result = sidecar(
        tmp_path, "approve", str(v2), "--by", "alice", "--note", "wins on billing", **env
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"approved {NAME} v{v2}; v{v2} is active, v1 retired\n{PUBLISHING}\n"
    assert statuses(engine) == {1: "retired", v2: "active"}
    trail = audit_trail(engine, NAME, v2)[-2:]
    assert [(a.action, a.actor, a.reason) for a in trail] == [
        ("approve", "alice", "wins on billing"),
        ("activate", "alice", "wins on billing"),
    ]
    assert owed(engine, v2) == dict.fromkeys(("file", "kafka", "http"), activation_of(engine, v2))
    [item] = [i for i in pending_outbox(engine) if i.target == "file"]
    assert item.document == document_for(candidates_of(engine, NAME)[v2]).model_dump(mode="json")
    assert item.document["approved_by"] == "alice"


def test_approve_json_names_the_activation_and_the_configured_targets(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "awaiting_approval")

    result = sidecar(
        tmp_path, "approve", str(v2), "--by", "alice", "--json",
        SIDECAR_PUBLISH_TARGETS="file,http", **env,
    )  # fmt: skip

    assert decision_json(result) == {
        "prompt": NAME,
        "version": v2,
        "status": "active",
        "previous": 1,
        "activation_id": activation_of(engine, v2),
        "targets": ["file", "http"],
        "forced": False,
    }
    assert set(owed(engine, v2)) == {"file", "http"}


def test_approve_with_publishing_off_says_so_and_has_nothing_to_wait_for(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "awaiting_approval")

    result = sidecar(
        tmp_path, "approve", str(v2), "--by", "alice", "--wait", "0.1",
        SIDECAR_PUBLISH_TARGETS="", **env,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"approved {NAME} v{v2}; v{v2} is active, v1 retired",
        "nothing to publish: SIDECAR_PUBLISH_TARGETS is empty",
    ]
    assert statuses(engine)[v2] == "active"
    assert pending_outbox(engine) == []


def test_approve_without_force_refuses_an_ungated_version_and_with_force_audits_it(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "proposed")
    before = snapshot(engine)

    refused = sidecar(tmp_path, "approve", str(v2), "--by", "alice", **env)

    line = assert_one_line_error(refused, f"v{v2} is proposed", "--force")
    assert "has not passed the shadow gate" in line
    assert refused.stdout == ""
    assert snapshot(engine) == before

    forced = sidecar(
        tmp_path, "approve", str(v2), "--by", "alice", "--force", "--note", "hotfix", **env
    )

    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines() == [
        f"approved {NAME} v{v2} (forced: it had not passed the shadow gate); "
        f"v{v2} is active, v1 retired",
        PUBLISHING,
    ]
    [approval] = [a for a in audit_trail(engine, NAME, v2) if a.to_status == "approved"]
    assert (approval.action, approval.from_status, approval.actor) == (
        "force_approve",
        "proposed",
        "alice",
    )
    assert (
        approval.reason == "forced: approved from proposed without passing the shadow gate; hotfix"
    )
    assert candidates_of(engine, NAME)[v2].evidence == {"forced": True}
    assert {item.document["evidence"]["forced"] for item in pending_outbox(engine)} == {True}


def test_approve_json_says_forced(tmp_path: Path, world: tuple[Engine, dict[str, str]]) -> None:
    engine, env = world
    v2 = add_version(engine, "shadow")
    result = sidecar(tmp_path, "approve", str(v2), "--by", "alice", "--force", "--json", **env)
    assert decision_json(result)["forced"] is True


# --- bad input: one line, exit 2, nothing changed ----------------------------------------------

BAD_DECISIONS = [
    # (arguments, with {v} the awaiting version and {p} a proposed one; words the line names)
    (["approve", "{v}"], ["--by", "only a person"]),
    (["approve", "{v}", "--by", "  "], ["--by"]),
    (["approve", "99", "--by", "alice"], [f"{NAME} has no version 99"]),
    (["approve", "1", "--by", "alice"], ["v1 is active"]),
    (["approve", "{v}", "--by", "alice", "--wait", "0"], ["--wait", "above 0"]),
    (["approve", "{v}", "--by", "alice", "--prompt", "other"], ["--prompt", "'other'"]),
    (["reject", "{p}", "--by", "bob"], ["--reason"]),
    (["reject", "{p}", "--by", "bob", "--reason", " "], ["--reason"]),
    (["reject", "{p}", "--reason", "too long"], ["--by"]),
    (["reject", "1", "--by", "bob", "--reason", "no"], ["v1 is active", "roll back"]),
    (["reject", "99", "--by", "bob", "--reason", "no"], [f"{NAME} has no version 99"]),
    (["rollback"], ["--by"]),
    (["rollback", "--by", "carol"], [f"{NAME} has no earlier version to roll back to"]),
    (["rollback", "--to", "{p}", "--by", "carol"], ["is proposed and was never active"]),
    (["rollback", "--to", "1", "--by", "carol"], ["v1 is active already"]),
    (["rollback", "--to", "99", "--by", "carol"], [f"{NAME} has no version 99"]),
    (["rollback", "--by", "carol", "--wait", "-1"], ["--wait"]),
]


@pytest.mark.parametrize(("arguments", "names"), BAD_DECISIONS)
def test_bad_decisions_are_one_line_and_change_nothing(
    tmp_path: Path, world: tuple[Engine, dict[str, str]], arguments: list[str], names: list[str]
) -> None:
    engine, env = world
    values = {"v": add_version(engine, "awaiting_approval"), "p": add_version(engine, "proposed")}
    before = snapshot(engine)

    result = sidecar(tmp_path, *[argument.format(**values) for argument in arguments], **env)

    assert_one_line_error(result, *[name.format(**values) for name in names])
    assert result.stdout == ""
    assert snapshot(engine) == before


# --- reject -----------------------------------------------------------------------------------


def test_reject_records_who_and_why_and_the_version_never_breeds(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2, v3 = add_version(engine, "shadow"), add_version(engine, "proposed")

    as_json = sidecar(
        tmp_path, "reject", str(v2), "--by", "bob", "--reason", "rude to billing", "--json", **env
    )
    as_text = sidecar(tmp_path, "reject", str(v3), "--by", "bob", "--reason", "too long", **env)

    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "prompt": NAME,
        "version": v2,
        "status": "rejected",
        "was": "shadow",
        "by": "bob",
        "reason": "rude to billing",
    }
    assert as_text.returncode == 0, as_text.stderr
    assert as_text.stdout == f"rejected {NAME} v{v3} (was proposed): too long\n"
    assert statuses(engine) == {1: "active", v2: "rejected", v3: "rejected"}
    last = audit_trail(engine, NAME, v2)[-1]
    assert (last.action, last.actor, last.reason) == ("reject", "bob", "rude to billing")
    assert {v2, v3} <= never_breed(engine, NAME)
    assert pending_outbox(engine) == []


# --- rollback ---------------------------------------------------------------------------------


def test_rollback_without_to_restores_the_version_active_before(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "awaiting_approval")
    approved(engine, v2)
    delivered_before = {i.id for i in pending_outbox(engine)}

    result = sidecar(tmp_path, "rollback", "--by", "carol", **env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"rolled back {NAME} from v{v2} to v1; v1 is active, v{v2} retired\n{PUBLISHING}\n"
    )
    assert statuses(engine) == {1: "active", v2: "retired"}
    back = audit_trail(engine, NAME)[-2:]
    assert [(a.version, a.to_status, a.action, a.actor, a.reason) for a in back] == [
        (v2, "retired", "rollback", "carol", f"rolled back from v{v2} to v1"),
        (1, "active", "rollback", "carol", f"rolled back from v{v2} to v1"),
    ]
    new_rows = [i for i in pending_outbox(engine) if i.id not in delivered_before]
    assert {i.target for i in new_rows} == {"file", "kafka", "http"}
    assert {(i.version, i.activation_id) for i in new_rows} == {(1, activation_of(engine, 1))}
    assert v2 in never_breed(engine, NAME)


def test_rollback_to_an_earlier_version_with_json(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "awaiting_approval")
    approved(engine, v2)
    v3 = add_version(engine, "awaiting_approval")
    approved(engine, v3)

    result = sidecar(
        tmp_path, "rollback", "--to", "1", "--by", "carol", "--reason", "v3 confuses refunds",
        "--json", **env,
    )  # fmt: skip

    assert decision_json(result) == {
        "prompt": NAME,
        "version": 1,
        "status": "active",
        "previous": v3,
        "activation_id": activation_of(engine, 1),
        "targets": ["file", "kafka", "http"],
        "forced": False,
    }
    assert statuses(engine) == {1: "active", v2: "retired", v3: "retired"}
    assert audit_trail(engine, NAME, 1)[-1].reason == "v3 confuses refunds"


# --- --wait -----------------------------------------------------------------------------------


def test_wait_times_out_naming_the_targets_still_owed_and_the_decision_stands(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "awaiting_approval")

    result = sidecar(tmp_path, "approve", str(v2), "--by", "alice", "--wait", "0.2", **env)

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: v{v2} not yet delivered to file, kafka, http after 0.2s")
    assert f"activation {activation_of(engine, v2)}" in line
    assert result.stdout.splitlines()[0] == f"approved {NAME} v{v2}; v{v2} is active, v1 retired"
    assert statuses(engine)[v2] == "active"
    assert set(owed(engine, v2)) == {"file", "kafka", "http"}


def start(tmp_path: Path, env: dict[str, str], *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", *arguments],
        cwd=tmp_path,
        env=environment(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def deliver_when_owed(engine: Engine, version: int, process: subprocess.Popen[str]) -> None:
    """What a running sidecar's relay does: mark each row of the new activation delivered. The
    command is still waiting while one of them is pending."""
    targets = {"file", "kafka", "http"}
    wait_until(lambda: set(owed(engine, version)) == targets, what=f"v{version}'s outbox rows")
    items = [item for item in pending_outbox(engine) if item.version == version]
    for item in items:
        assert process.poll() is None, "the command ended while a target was still owed"
        mark_delivered(engine, item.id, datetime.now(UTC))


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr


def test_approve_wait_returns_once_every_target_is_delivered(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "awaiting_approval")
    wait = str(COMMAND_TIMEOUT_S)

    process = start(tmp_path, env, "approve", str(v2), "--by", "alice", "--wait", wait)
    deliver_when_owed(engine, v2, process)
    returncode, stdout, stderr = finished(process)

    assert returncode == 0, stderr
    assert stdout.splitlines()[-1] == f"delivered: no target is owed v{v2} any more"
    assert owed(engine, v2) == {}


def test_rollback_wait_with_json_prints_only_the_decision(
    tmp_path: Path, world: tuple[Engine, dict[str, str]]
) -> None:
    engine, env = world
    v2 = add_version(engine, "awaiting_approval")
    approved(engine, v2)
    wait = str(COMMAND_TIMEOUT_S)

    process = start(tmp_path, env, "rollback", "--by", "carol", "--wait", wait, "--json")
    deliver_when_owed(engine, 1, process)
    returncode, stdout, stderr = finished(process)

    assert returncode == 0, stderr
    report = json.loads(stdout)
    assert (report["version"], report["previous"]) == (1, v2)
    assert owed(engine, 1) == {}


# --- PostgreSQL ---------------------------------------------------------------------------------


def test_approve_then_rollback_on_postgres(
    tmp_path: Path, postgres_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    engine, env = prepared(tmp_path, postgres_url, migrated_engine)
    v2 = add_version(engine, "awaiting_approval")

    approval = decision_json(
        sidecar(tmp_path, "approve", str(v2), "--by", "alice", "--json", **env)
    )
    assert statuses(engine) == {1: "retired", v2: "active"}
    assert owed(engine, v2) == dict.fromkeys(("file", "kafka", "http"), approval["activation_id"])

    back = decision_json(sidecar(tmp_path, "rollback", "--by", "carol", "--json", **env))
    assert (back["version"], back["previous"]) == (1, v2)
    assert back["activation_id"] > approval["activation_id"]
    assert statuses(engine) == {1: "active", v2: "retired"}
    assert owed(engine, 1) == dict.fromkeys(("file", "kafka", "http"), back["activation_id"])
