"""The lifecycle's table of moves: every legal one, the illegal ones with the words a person
reads, force, and that only a person approves."""

from __future__ import annotations

import itertools

import pytest

from sidecar.errors import InputError
from sidecar.promote.lifecycle import (
    REJECTABLE,
    Action,
    Actor,
    IllegalTransition,
    Status,
    action_for,
    approval_action,
    approval_steps,
    check_rollback,
    check_transition,
    never_breeds,
    sources,
)

LEGAL = [
    ("pool", "proposed", Actor.OPTIMIZER, Action.PROPOSE),
    ("proposed", "shadow", Actor.SHADOW, Action.SHADOW),
    ("shadow", "awaiting_approval", Actor.SHADOW, Action.GATE),
    ("shadow", "rejected", Actor.SHADOW, Action.GATE),
    ("pool", "rejected", Actor.PERSON, Action.REJECT),
    ("proposed", "rejected", Actor.PERSON, Action.REJECT),
    ("shadow", "rejected", Actor.PERSON, Action.REJECT),
    ("awaiting_approval", "rejected", Actor.PERSON, Action.REJECT),
    ("awaiting_approval", "approved", Actor.PERSON, Action.APPROVE),
    ("approved", "active", Actor.PERSON, Action.ACTIVATE),
    ("active", "retired", Actor.PERSON, Action.RETIRE),
    ("retired", "active", Actor.PERSON, Action.ROLLBACK),
]


@pytest.mark.parametrize(("current", "target", "actor", "action"), LEGAL)
def test_every_legal_move_passes_and_names_its_action(
    current: str, target: str, actor: Actor, action: Action
) -> None:
    check_transition(7, current, target, actor)
    assert action_for(current, target, actor) == action


FORCED = {(status, Status.APPROVED, Actor.PERSON) for status in ("pool", "proposed", "shadow")}
"""The only moves `force` opens: a person approving what the gate never passed."""


def test_no_other_move_is_legal_for_anyone_and_force_opens_only_ungated_approvals() -> None:
    legal = {(current, target, actor) for current, target, actor, _ in LEGAL}
    for current, target, actor in itertools.product(Status, Status, Actor):
        if (current, target, actor) in legal:
            continue
        with pytest.raises(IllegalTransition):
            check_transition(7, current, target, actor)
        if (current, target, actor) in FORCED:
            check_transition(7, current, target, actor, force=True)
        else:
            with pytest.raises(IllegalTransition):
                check_transition(7, current, target, actor, force=True)


ILLEGAL = [
    ("rejected", "approved", Actor.PERSON, "v7 is rejected: a rejected version cannot be approved"),
    (
        "proposed",
        "approved",
        Actor.PERSON,
        "v7 is proposed and has not passed the shadow gate: approving it anyway needs force "
        '(--force, or "force": true over HTTP) and is audited as forced',
    ),
    (
        "awaiting_approval",
        "approved",
        Actor.SHADOW,
        "only a person approves: the shadow runner cannot make v7 approved",
    ),
    (
        "retired",
        "active",
        Actor.OPTIMIZER,
        "only a person approves: the optimizer cannot make v7 active",
    ),
    (
        "retired",
        "approved",
        Actor.PERSON,
        "v7 is retired: a retired version cannot be approved again: roll back to it instead",
    ),
    ("active", "approved", Actor.PERSON, "v7 is active: an active version cannot be approved"),
    (
        "active",
        "rejected",
        Actor.PERSON,
        "v7 is active: the active version cannot be rejected: roll back to an earlier one instead",
    ),
    ("rejected", "rejected", Actor.PERSON, "v7 is rejected already"),
    ("retired", "rejected", Actor.PERSON, "v7 is retired: a retired version cannot be rejected"),
    (
        "proposed",
        "active",
        Actor.PERSON,
        "v7 is proposed: only an approved version, or a retired one by a rollback, can become "
        "active",
    ),
    ("approved", "retired", Actor.PERSON, "v7 is approved: only the active version can be retired"),
    (
        "awaiting_approval",
        "rejected",
        Actor.SHADOW,
        "v7 is awaiting_approval: only a person moves it to rejected",
    ),
    (
        "proposed",
        "shadow",
        Actor.PERSON,
        "v7 is proposed: only the shadow runner moves it to shadow",
    ),
    ("pool", "shadow", Actor.SHADOW, "v7 is pool: a pool version cannot be shadowed"),
    (
        "rejected",
        "awaiting_approval",
        Actor.SHADOW,
        "v7 is rejected: a rejected version cannot be sent for approval",
    ),
    ("active", "pool", Actor.OPTIMIZER, "v7 is active: an active version cannot be moved to pool"),
]


@pytest.mark.parametrize(("current", "target", "actor", "message"), ILLEGAL)
def test_an_illegal_move_says_why_in_one_line(
    current: str, target: str, actor: Actor, message: str
) -> None:
    with pytest.raises(IllegalTransition) as raised:
        check_transition(7, current, target, actor)
    assert str(raised.value) == message
    assert isinstance(raised.value, InputError)


@pytest.mark.parametrize("current", ["pool", "proposed", "shadow"])
def test_a_forced_approval_is_named_so(current: str) -> None:
    assert approval_action(current) == Action.FORCE_APPROVE
    assert action_for(current, "approved", Actor.PERSON) == Action.FORCE_APPROVE


@pytest.mark.parametrize("actor", [Actor.OPTIMIZER, Actor.SHADOW, Actor.CONFIG])
def test_only_a_person_approves_even_with_force(actor: Actor) -> None:
    for current in Status:
        for target in (Status.APPROVED, Status.ACTIVE):
            with pytest.raises(IllegalTransition, match=r"^only a person approves"):
                check_transition(7, current, target, actor, force=True)


def test_an_approval_is_two_steps_and_a_gated_one_is_not_forced() -> None:
    assert approval_steps(7, "awaiting_approval", force=False) == [
        ("awaiting_approval", "approved"),
        ("approved", "active"),
    ]
    assert approval_steps(7, "shadow", force=True) == [
        ("shadow", "approved"),
        ("approved", "active"),
    ]
    assert approval_action("awaiting_approval") == Action.APPROVE
    with pytest.raises(IllegalTransition, match="has not passed the shadow gate"):
        approval_steps(7, "shadow", force=False)
    with pytest.raises(IllegalTransition, match="cannot be approved"):
        approval_steps(7, "rejected", force=True)


def test_a_rollback_goes_back_to_a_retired_version_only() -> None:
    check_rollback(3, "retired")
    with pytest.raises(IllegalTransition) as raised:
        check_rollback(3, "active")
    assert str(raised.value) == "v3 is active already: roll back to an earlier version"
    for status in set(Status) - {Status.ACTIVE, Status.RETIRED}:
        with pytest.raises(IllegalTransition) as raised:
            check_rollback(3, status)
        assert str(raised.value) == (
            f"v3 is {status} and was never active: only a retired version can be rolled back to"
        )


def test_sources_name_where_an_actor_may_move_from() -> None:
    assert sources("shadow", Actor.SHADOW) == {Status.PROPOSED}
    assert sources("rejected", Actor.SHADOW) == {Status.SHADOW}
    assert sources("rejected", Actor.PERSON) == REJECTABLE
    assert sources("approved", Actor.SHADOW) == frozenset()


def test_no_move_leads_back_into_the_pool() -> None:
    with pytest.raises(ValueError, match="a version is created there"):
        action_for("active", "pool", Actor.PERSON)


def test_unknown_statuses_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        check_transition(7, "limbo", "approved", Actor.PERSON)


def test_rejected_and_rolled_back_versions_never_breed_unless_active_again() -> None:
    statuses = {1: "retired", 2: "rejected", 3: "retired", 4: "active", 5: "pool", 6: "proposed"}
    assert never_breeds(statuses, [3, 4]) == {2, 3}
    assert never_breeds(statuses, []) == {2}
    assert never_breeds({1: "active"}, [1, 1]) == set()
