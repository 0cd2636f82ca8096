"""The candidate lifecycle as a table of legal moves: who may move a version from which status to
which. Every decision that changes what the chatbot runs passes through here first, so an illegal
request fails with one line a person can act on before anything is written, and only a person
ever approves.

    pool -> proposed -> shadow -> awaiting_approval -> approved -> active -> retired
                \\          \\            \\                          ^           |
                 `----------`------------`-> rejected               `- rollback-'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from sidecar.errors import InputError


class Status(StrEnum):
    POOL = "pool"
    PROPOSED = "proposed"
    SHADOW = "shadow"
    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED = "rejected"
    APPROVED = "approved"
    ACTIVE = "active"
    RETIRED = "retired"


class Actor(StrEnum):
    """Who asks for a move: the optimizer, the shadow runner, a person, or the config file."""

    OPTIMIZER = "optimizer"
    SHADOW = "shadow"
    PERSON = "person"
    CONFIG = "config"


class Action(StrEnum):
    """What an audit row records; `gate` is the shadow gate's decision (passed, or lost), so a
    person's `reject` is never confused with the gate's."""

    SEED = "seed"
    BREED = "breed"
    PROPOSE = "propose"
    SHADOW = "shadow"
    GATE = "gate"
    APPROVE = "approve"
    FORCE_APPROVE = "force_approve"
    ACTIVATE = "activate"
    RETIRE = "retire"
    REJECT = "reject"
    ROLLBACK = "rollback"


class IllegalTransition(InputError):
    """A move the lifecycle does not allow; the message says why and, if any, what would."""


REJECTABLE = frozenset({Status.POOL, Status.PROPOSED, Status.SHADOW, Status.AWAITING_APPROVAL})
"""Statuses a person may reject: anything not yet approved."""

UNGATED = frozenset({Status.POOL, Status.PROPOSED, Status.SHADOW})
"""Statuses that have not passed the shadow gate: approving them needs force, audited as such."""

MOVES: Mapping[tuple[Status, Status], frozenset[Actor]] = {
    (Status.POOL, Status.PROPOSED): frozenset({Actor.OPTIMIZER}),
    (Status.PROPOSED, Status.SHADOW): frozenset({Actor.SHADOW}),
    (Status.SHADOW, Status.AWAITING_APPROVAL): frozenset({Actor.SHADOW}),
    (Status.SHADOW, Status.REJECTED): frozenset({Actor.SHADOW, Actor.PERSON}),
    **{
        (status, Status.REJECTED): frozenset({Actor.PERSON})
        for status in REJECTABLE - {Status.SHADOW}
    },
    **{(status, Status.APPROVED): frozenset({Actor.PERSON}) for status in REJECTABLE},
    (Status.APPROVED, Status.ACTIVE): frozenset({Actor.PERSON}),
    (Status.ACTIVE, Status.RETIRED): frozenset({Actor.PERSON}),
    (Status.RETIRED, Status.ACTIVE): frozenset({Actor.PERSON}),
}
"""(from, to) -> the actors who may make that move; any other move is illegal."""

ACTOR_NAMES = {
    Actor.OPTIMIZER: "the optimizer",
    Actor.SHADOW: "the shadow runner",
    Actor.PERSON: "a person",
    Actor.CONFIG: "the config file",
}


def check_transition(
    version: int, current: str, target: str, actor: Actor, force: bool = False
) -> None:
    """Raise IllegalTransition unless `actor` may move version `version` from `current` to
    `target`; `force` only lets a person approve a version the gate has not passed."""
    now, to = Status(current), Status(target)
    if to in (Status.APPROVED, Status.ACTIVE) and actor != Actor.PERSON:
        raise IllegalTransition(
            f"only a person approves: {ACTOR_NAMES[actor]} cannot make v{version} {to}"
        )
    if now == to:
        raise IllegalTransition(f"v{version} is {now} already")
    allowed = MOVES.get((now, to))
    if allowed is None:
        raise IllegalTransition(f"v{version} is {now}: {_why_not(now, to)}")
    if actor not in allowed:
        who = " or ".join(sorted(ACTOR_NAMES[a] for a in allowed))
        raise IllegalTransition(f"v{version} is {now}: only {who} moves it to {to}")
    if to == Status.APPROVED and now in UNGATED and not force:
        raise IllegalTransition(
            f"v{version} is {now} and has not passed the shadow gate: "
            'approving it anyway needs force (--force, or "force": true over HTTP) and is '
            "audited as forced"
        )


def _why_not(current: Status, target: Status) -> str:
    """The rule a person broke, in words: what a version in `current` cannot become."""
    if target == Status.APPROVED and current == Status.RETIRED:
        return "a retired version cannot be approved again: roll back to it instead"
    if target == Status.REJECTED and current == Status.ACTIVE:
        return "the active version cannot be rejected: roll back to an earlier one instead"
    if target == Status.ACTIVE:
        return "only an approved version, or a retired one by a rollback, can become active"
    if target == Status.RETIRED:
        return "only the active version can be retired"
    article = "an" if current[0] in "aeiou" else "a"
    return f"{article} {current} version cannot be {_participle(target)}"


def _participle(target: Status) -> str:
    return {
        Status.PROPOSED: "proposed",
        Status.SHADOW: "shadowed",
        Status.AWAITING_APPROVAL: "sent for approval",
        Status.REJECTED: "rejected",
        Status.APPROVED: "approved",
    }.get(target, f"moved to {target}")


def sources(target: str, actor: Actor) -> frozenset[Status]:
    """The statuses `actor` may move a version from to `target` (none: the move is never its)."""
    to = Status(target)
    return frozenset(now for (now, end), actors in MOVES.items() if end == to and actor in actors)


def approval_steps(version: int, current: str, force: bool) -> list[tuple[str, str]]:
    """The moves of one approval, made in one transaction: to `approved`, then to `active`."""
    check_transition(version, current, Status.APPROVED, Actor.PERSON, force)
    return [(Status(current), Status.APPROVED), (Status.APPROVED, Status.ACTIVE)]


def approval_action(current: str) -> Action:
    """`force_approve` when the version never passed the gate, else `approve`."""
    return Action.FORCE_APPROVE if Status(current) in UNGATED else Action.APPROVE


def action_for(current: str, target: str, actor: Actor) -> Action:
    """The audit action of a (legal) move; a rollback's moves are named by the rollback."""
    now, to = Status(current), Status(target)
    if to == Status.REJECTED:
        return Action.GATE if actor == Actor.SHADOW else Action.REJECT
    if to == Status.APPROVED:
        return approval_action(now)
    named = {
        Status.PROPOSED: Action.PROPOSE,
        Status.SHADOW: Action.SHADOW,
        Status.AWAITING_APPROVAL: Action.GATE,
        Status.ACTIVE: Action.ACTIVATE if now == Status.APPROVED else Action.ROLLBACK,
        Status.RETIRED: Action.RETIRE,
    }
    if to not in named:
        raise ValueError(f"no move leads to {to}: a version is created there")
    return named[to]


def check_rollback(version: int, current: str) -> None:
    """A rollback goes back to a version that was active before (now `retired`)."""
    status = Status(current)
    if status == Status.ACTIVE:
        raise IllegalTransition(f"v{version} is active already: roll back to an earlier version")
    if status != Status.RETIRED:
        raise IllegalTransition(
            f"v{version} is {status} and was never active: only a retired version can be "
            "rolled back to"
        )


def never_breeds(statuses: Mapping[int, str], retired_by_rollback: Iterable[int]) -> set[int]:
    """Versions the optimizer never breeds from again: the rejected ones, and the ones a rollback
    retired (a person took them out of production), unless one of those is active again."""
    rejected = {v for v, status in statuses.items() if status == Status.REJECTED}
    rolled_back = {v for v in retired_by_rollback if statuses.get(v) != Status.ACTIVE}
    return rejected | rolled_back
