"""Approve, reject, roll back and the shadow runner's moves against real databases (a SQLite
file and PostgreSQL): every decision is one transaction, audited, and a raced one changes
nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event

from sidecar.errors import InputError
from sidecar.optimize.engine import warm_pool
from sidecar.promote.documents import document_for
from sidecar.promote.lifecycle import Actor, IllegalTransition
from sidecar.store.candidates import candidates_of
from sidecar.store.database import aware
from sidecar.store.outbox import pending_outbox
from sidecar.store.promotions import (
    active_documents,
    approve,
    audit_trail,
    decisions_since,
    latest_audit_id,
    never_breed,
    reject,
    rollback,
    transition,
)
from sidecar.store.repository import seed_prompt
from sidecar.store.shadow import keep_shadow_figures
from tests.versions import NAME, SHADOW_FIGURES, TARGETS, add_version, snapshot, statuses

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SEED = {"system_prompt": "You help customers."}


@pytest.fixture
def engine(database_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    engine = migrated_engine(database_url)
    seed_prompt(engine, NAME, SEED, NOW)
    return engine


def runner(engine: Engine, version: int, target: str, **options: Any) -> bool:
    """A move as the shadow runner makes it."""
    return transition(
        engine, NAME, version, target, actor=Actor.SHADOW, by="shadow", reason="gate", now=NOW,
        **options,
    )  # fmt: skip


def runner_figures(engine: Engine, version: int, figures: dict[str, Any]) -> None:
    """The shadow runner's figures so far, kept while the version stays in shadow."""
    assert keep_shadow_figures(engine, NAME, version, figures)


def moves(engine: Engine, since: int = 0) -> list[tuple[int, str | None, str, str | None, str]]:
    return [
        (a.version, a.from_status, a.to_status, a.action, a.actor)
        for a in audit_trail(engine, NAME)
        if (a.id or 0) > since
    ]


def approve_now(engine: Engine, version: int, **overrides: Any) -> Any:
    options: dict[str, Any] = {"by": "alice", "note": "looks right", "force": False}
    return approve(engine, NAME, version, targets=TARGETS, now=NOW, **{**options, **overrides})


def rollback_now(engine: Engine, to: int | None, **overrides: Any) -> Any:
    options: dict[str, Any] = {"by": "alice", "reason": None, "targets": TARGETS, "name": NAME}
    options.update(overrides)
    return rollback(engine, options.pop("name"), to=to, now=NOW, **options)


# --- approve ----------------------------------------------------------------------------------


def test_approving_a_gated_version_activates_it_retires_the_champion_and_owes_every_target(
    engine: Engine,
) -> None:
    v2 = add_version(engine, "awaiting_approval")
    before = latest_audit_id(engine)
    when = NOW + timedelta(hours=1)
    activation = approve(
        engine, NAME, v2, by="alice", note="wins on billing", force=False, targets=TARGETS, now=when
    )
    assert statuses(engine) == {1: "retired", v2: "active"}
    row = candidates_of(engine, NAME)[v2]
    assert (row.approved_by, aware(row.approved_at)) == ("alice", when)
    assert row.evidence == {"shadow": SHADOW_FIGURES}
    assert moves(engine, before) == [
        (v2, "awaiting_approval", "approved", "approve", "alice"),
        (v2, "approved", "active", "activate", "alice"),
        (1, "active", "retired", "retire", "alice"),
    ]
    trail = [a for a in audit_trail(engine, NAME) if (a.id or 0) > before]
    assert [a.reason for a in trail] == ["wins on billing", "wins on billing", f"replaced by v{v2}"]
    assert {a.at for a in trail} == {when}
    [activated] = [a for a in trail if a.to_status == "active"]
    assert (activation.id, activation.version, activation.previous) == (activated.id, v2, 1)
    assert activation.targets == TARGETS
    assert activation.document == document_for(row).model_dump(mode="json")
    assert activation.document["evidence"]["shadow_mean"] == 0.8
    assert activation.document["approved_by"] == "alice"
    outbox = pending_outbox(engine)
    assert [(i.target, i.activation_id, i.version, i.attempts) for i in outbox] == [
        (target, activation.id, v2, 0) for target in TARGETS
    ]
    assert all(i.document == activation.document and i.status == "pending" for i in outbox)


def test_approving_without_force_what_the_gate_never_passed_fails_and_changes_nothing(
    engine: Engine,
) -> None:
    v2 = add_version(engine, "proposed")
    before = snapshot(engine)
    with pytest.raises(IllegalTransition) as raised:
        approve_now(engine, v2)
    assert str(raised.value) == (
        f"v{v2} is proposed and has not passed the shadow gate: approving it anyway needs force "
        '(--force, or "force": true over HTTP) and is audited as forced'
    )
    assert snapshot(engine) == before


def test_a_forced_approval_is_audited_as_forced_and_says_so_in_the_document(
    engine: Engine,
) -> None:
    v2 = add_version(engine, "shadow")
    runner_figures(engine, v2, {"n": 3})
    activation = approve_now(engine, v2, force=True, note="hotfix for the outage")
    row = candidates_of(engine, NAME)[v2]
    assert row.status == "active"
    assert row.evidence == {"shadow": {"n": 3}, "forced": True}
    approval = [a for a in audit_trail(engine, NAME, v2) if a.to_status == "approved"]
    assert [(a.action, a.from_status, a.actor) for a in approval] == [
        ("force_approve", "shadow", "alice")
    ]
    assert approval[0].reason == (
        "forced: approved from shadow without passing the shadow gate; hotfix for the outage"
    )
    evidence = activation.document["evidence"]
    assert (evidence["n"], evidence["forced"]) == (3, True)


def test_unknown_versions_and_nameless_deciders_are_refused(engine: Engine) -> None:
    with pytest.raises(InputError, match=f"^{NAME} has no version 9$"):
        approve_now(engine, 9)
    with pytest.raises(InputError, match=f"^{NAME} has no version 9$"):
        reject(engine, NAME, 9, by="alice", reason="no", now=NOW)
    with pytest.raises(InputError, match=f"^{NAME} has no version 9$"):
        rollback_now(engine, 9)
    v2 = add_version(engine, "awaiting_approval")
    before = snapshot(engine)
    with pytest.raises(InputError, match="needs the name of the person"):
        approve_now(engine, v2, by=" ")
    with pytest.raises(InputError, match="needs the name of the person"):
        rollback_now(engine, None, by="")
    with pytest.raises(InputError, match=f"^rejecting v{v2} needs a reason$"):
        reject(engine, NAME, v2, by="alice", reason="  ", now=NOW)
    assert snapshot(engine) == before


# --- reject and illegal moves -----------------------------------------------------------------


def test_a_person_rejects_with_a_reason_and_the_version_can_never_be_approved(
    engine: Engine,
) -> None:
    v2 = add_version(engine, "awaiting_approval")
    reject(engine, NAME, v2, by="bob", reason="too curt with refunds", now=NOW)
    assert statuses(engine)[v2] == "rejected"
    [entry] = [a for a in audit_trail(engine, NAME, v2) if a.to_status == "rejected"]
    assert (entry.from_status, entry.action, entry.actor) == ("awaiting_approval", "reject", "bob")
    assert (entry.reason, entry.at) == ("too curt with refunds", NOW)
    before = snapshot(engine)
    with pytest.raises(IllegalTransition, match=f"^v{v2} is rejected: a rejected version cannot"):
        approve_now(engine, v2, force=True)
    with pytest.raises(IllegalTransition, match=f"^v{v2} is rejected already$"):
        reject(engine, NAME, v2, by="bob", reason="again", now=NOW)
    with pytest.raises(IllegalTransition, match=r"^v1 is active: the active version cannot be"):
        reject(engine, NAME, 1, by="bob", reason="old", now=NOW)
    assert snapshot(engine) == before


def test_the_shadow_runner_moves_versions_and_never_approves(engine: Engine) -> None:
    v2 = add_version(engine, "proposed")
    assert runner(engine, v2, "shadow", evidence={"pareto_mean": 0.9, "shadow": {"n": 0}})
    runner_figures(engine, v2, {"n": 12, "shadow_mean": 0.7})
    row = candidates_of(engine, NAME)[v2]
    assert (row.status, row.evidence) == (
        "shadow",
        {"pareto_mean": 0.9, "shadow": {"n": 12, "shadow_mean": 0.7}},
    )
    before = snapshot(engine)
    with pytest.raises(IllegalTransition, match=r"^only a person approves"):
        runner(engine, v2, "approved")
    with pytest.raises(ValueError, match="approve"):
        transition(engine, NAME, v2, "active", actor=Actor.PERSON, by="alice", reason="", now=NOW)
    assert snapshot(engine) == before
    reject(engine, NAME, v2, by="carol", reason="not this one", now=NOW)
    before = snapshot(engine)  # a person decided first: the runner's move finds nothing to do
    assert not runner(engine, v2, "awaiting_approval", evidence={"shadow": SHADOW_FIGURES})
    assert snapshot(engine) == before
    v3 = add_version(engine, "shadow")
    assert runner(engine, v3, "rejected")
    assert moves(engine)[-1] == (v3, "shadow", "rejected", "gate", "shadow")


# --- rollback ---------------------------------------------------------------------------------


def test_rollback_goes_back_to_the_previous_version_or_the_one_named(engine: Engine) -> None:
    v2, v3 = add_version(engine, "awaiting_approval"), add_version(engine, "awaiting_approval")
    approve_now(engine, v2)
    approve_now(engine, v3)
    before = latest_audit_id(engine)
    back = rollback_now(engine, None, reason="refunds broke")
    assert (back.version, back.previous) == (v2, v3)
    assert statuses(engine) == {1: "retired", v2: "active", v3: "retired"}
    assert moves(engine, before) == [
        (v3, "active", "retired", "rollback", "alice"),
        (v2, "retired", "active", "rollback", "alice"),
    ]
    assert [a.reason for a in audit_trail(engine, NAME) if (a.id or 0) > before] == [
        "refunds broke",
        "refunds broke",
    ]
    owed = [i for i in pending_outbox(engine) if i.activation_id == back.id]
    assert [(i.target, i.version) for i in owed] == [(t, v2) for t in TARGETS]
    assert owed[0].document == back.document
    assert back.document["approved_by"] == "alice"  # its own approval, kept
    seed = rollback_now(engine, 1, targets=("file",))
    assert (seed.version, seed.previous, seed.targets) == (1, v2, ("file",))
    assert statuses(engine) == {1: "active", v2: "retired", v3: "retired"}
    assert audit_trail(engine, NAME)[-1].reason == f"rolled back from v{v2} to v1"


def test_rollback_refuses_a_version_that_was_never_active_and_the_active_one(
    engine: Engine,
) -> None:
    with pytest.raises(InputError, match=f"^{NAME} has no earlier version to roll back to$"):
        rollback_now(engine, None)
    v2 = add_version(engine, "awaiting_approval")
    reject(engine, NAME, v2, by="bob", reason="no", now=NOW)
    before = snapshot(engine)
    with pytest.raises(IllegalTransition) as raised:
        rollback_now(engine, v2)
    assert str(raised.value) == (
        f"v{v2} is rejected and was never active: only a retired version can be rolled back to"
    )
    with pytest.raises(IllegalTransition, match=r"^v1 is active already"):
        rollback_now(engine, 1)
    with pytest.raises(InputError, match=r"^other has no active version to roll back from$"):
        rollback_now(engine, None, name="other")
    assert snapshot(engine) == before


# --- races ------------------------------------------------------------------------------------


def test_a_decision_raced_between_its_read_and_its_write_changes_nothing(
    engine: Engine, database_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    """Another client approves v3 after this approval of v2 read the champion and before it
    writes: the compare-and-set finds the champion moved, and v2's approval writes nothing."""
    v2, v3 = add_version(engine, "awaiting_approval"), add_version(engine, "awaiting_approval")
    other = migrated_engine(database_url)
    raced: list[Any] = []

    def interleave(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE candidates") and not raced:
            raced.append(approve_now(other, v3, by="bob"))

    event.listen(engine, "before_cursor_execute", interleave)
    try:
        with pytest.raises(InputError) as raised:
            approve_now(engine, v2)
    finally:
        event.remove(engine, "before_cursor_execute", interleave)
    assert str(raised.value) == f"{NAME}'s active version changed status meanwhile; try again"
    assert statuses(engine) == {1: "retired", v2: "awaiting_approval", v3: "active"}
    activations = [a for a in audit_trail(engine, NAME) if a.action == "activate"]
    assert [(a.version, a.actor) for a in activations] == [(v3, "bob")]
    assert {i.activation_id for i in pending_outbox(engine)} == {raced[0].id}


def test_concurrent_approvals_leave_one_active_version_and_an_outbox_per_activation(
    engine: Engine,
) -> None:
    versions = [add_version(engine, "awaiting_approval") for _ in range(4)]
    start = threading.Barrier(len(versions))
    outcomes: dict[int, Any] = {}

    def decide(version: int) -> None:
        start.wait()
        try:
            outcomes[version] = approve_now(engine, version)
        except InputError as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=decide, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [v for v, outcome in outcomes.items() if not isinstance(outcome, InputError)]
    lost = [outcome for outcome in outcomes.values() if isinstance(outcome, InputError)]
    assert won and len(won) + len(lost) == len(versions)
    assert all(str(exc).endswith("changed status meanwhile; try again") for exc in lost)
    now = statuses(engine)
    chain = sorted(won, key=lambda v: outcomes[v].id)  # each replaced the one before it
    assert [outcomes[v].previous for v in chain] == [1, *chain[:-1]]
    assert [v for v, status in now.items() if status == "active"] == [chain[-1]]
    assert all(now[v] == "retired" for v in chain[:-1])
    assert all(now[v] == "awaiting_approval" for v in set(versions) - set(won))
    activations = [outcomes[v].id for v in chain]
    assert [a.id for a in audit_trail(engine, NAME) if a.action == "activate"] == activations
    owed = pending_outbox(engine)
    assert sorted(i.activation_id for i in owed) == sorted(activations * len(TARGETS))


# --- what is active, what breeds, what was decided ---------------------------------------------


def test_active_documents_follow_the_seed_approvals_and_rollbacks(engine: Engine) -> None:
    seed = candidates_of(engine, NAME)[1]
    assert active_documents(engine) == {NAME: document_for(seed).model_dump(mode="json")}
    v2 = add_version(engine, "awaiting_approval")
    activation = approve_now(engine, v2)
    assert active_documents(engine) == {NAME: activation.document}
    back = rollback_now(engine, None)
    assert back.version == 1
    assert active_documents(engine) == {NAME: back.document}
    quiet = approve(
        engine, NAME, add_version(engine, "awaiting_approval"), by="alice", note=None,
        force=False, targets=(), now=NOW,
    )  # fmt: skip
    assert active_documents(engine)[NAME]["version"] == quiet.version  # publishing off
    assert audit_trail(engine, NAME, quiet.version)[-1].reason == "passed the shadow gate"


def test_rejected_and_rolled_back_versions_never_breed_again(engine: Engine) -> None:
    v2, v3, v4 = (add_version(engine, "awaiting_approval") for _ in range(3))
    v5 = add_version(engine, "proposed")
    reject(engine, NAME, v4, by="bob", reason="no", now=NOW)
    approve_now(engine, v2)
    approve_now(engine, v3)
    rollback_now(engine, v2, reason="worse")
    assert never_breed(engine, NAME) == {v3, v4}
    everyone = candidates_of(engine, NAME)
    assert warm_pool(everyone, [v3, v4, v5, 1], v2, cap=5, barred=never_breed(engine, NAME)) == [
        v2,
        v5,
        1,
    ]
    rollback_now(engine, v3, reason="it was fine")
    assert never_breed(engine, NAME) == {v2, v4}


def test_audit_actions_and_the_decisions_a_relay_counts(engine: Engine) -> None:
    [seed] = audit_trail(engine, NAME)
    assert (seed.action, seed.actor, seed.to_status) == ("seed", "config", "active")
    start = latest_audit_id(engine)
    v2, v3 = add_version(engine, "awaiting_approval"), add_version(engine, "shadow")
    assert [a.action for a in audit_trail(engine, NAME, v2)] == [
        "breed",
        "propose",
        "shadow",
        "gate",
    ]
    approve_now(engine, v2)
    reject(engine, NAME, v3, by="bob", reason="no", now=NOW)
    rollback_now(engine, None)
    decided = decisions_since(engine, start)
    assert [(a.version, a.action, a.to_status) for a in decided] == [
        (v2, "approve", "approved"),
        (v3, "reject", "rejected"),
        (1, "rollback", "active"),
    ]
    assert decisions_since(engine, decided[-1].id or 0) == []
    assert all(a.at.tzinfo is not None for a in decided)
