"""The rule that bounds a consumer's wait for the group's assignment (ingest/assignment.py)."""

from __future__ import annotations

import pytest

from sidecar.ingest.assignment import AssignmentWatch, Recovered, Rejoin, rejoin_message

BOUND = 30.0


def waiting_since(start: float) -> AssignmentWatch:
    watch = AssignmentWatch(BOUND)
    watch.waiting(start)
    return watch


def test_a_member_is_never_due_and_has_waited_nothing() -> None:
    watch = AssignmentWatch(BOUND)
    assert watch.member
    assert watch.due(1e9) is None
    assert watch.waited(1e9) == 0.0


def test_a_wait_is_due_for_a_rejoin_at_the_bound_not_before() -> None:
    watch = waiting_since(100.0)
    assert not watch.member
    assert watch.due(100.0 + BOUND - 0.001) is None
    assert watch.waited(110.0) == 10.0
    assert watch.due(100.0 + BOUND) == Rejoin(BOUND, first=True, leader=None, rejoins=1)


def test_a_rejoin_is_due_again_every_bound_and_only_the_first_is_the_first() -> None:
    watch = waiting_since(0.0)
    first = watch.due(BOUND)
    assert first is not None and first.first
    assert watch.due(BOUND + 1) is None  # the bound counts again from the rejoin
    second = watch.due(2 * BOUND)
    assert second == Rejoin(2 * BOUND, first=False, leader=None, rejoins=2)
    assert watch.waited(2 * BOUND) == 2 * BOUND  # the episode keeps its start


def test_a_revoke_during_a_wait_keeps_the_episode_start() -> None:
    watch = waiting_since(0.0)
    watch.waiting(20.0)  # the rebalance listener says so again at each join attempt
    assert watch.due(BOUND) is not None


def test_a_completed_join_ends_the_episode_and_says_how_it_went_only_after_rejoins() -> None:
    quick = waiting_since(0.0)
    assert quick.joined(3.0) is None
    assert quick.member

    slow = waiting_since(0.0)
    assert slow.due(BOUND) is not None
    assert slow.joined(BOUND + 4) == Recovered(BOUND + 4, 1)
    assert slow.member and slow.waited(BOUND + 5) == 0.0
    assert slow.due(10 * BOUND) is None

    slow.waiting(100.0)  # a later episode starts its own count
    again = slow.due(100.0 + BOUND)
    assert again is not None and again.first and again.rejoins == 1


def test_the_leader_a_join_answer_named_goes_with_the_rejoin_unless_it_was_this_member() -> None:
    watch = waiting_since(0.0)
    watch.answered("ghost-1", "me-1")
    assert watch.due(BOUND) == Rejoin(BOUND, first=True, leader="ghost-1", rejoins=1)
    # the answer belonged to the consumer that rejoined; the next one answers for itself
    assert watch.due(2 * BOUND) == Rejoin(2 * BOUND, first=False, leader=None, rejoins=2)

    led = waiting_since(0.0)
    led.answered("me-1", "me-1")
    due = led.due(BOUND)
    assert due is not None and due.leader is None


def test_an_episode_forgets_the_previous_ones_leader() -> None:
    watch = waiting_since(0.0)
    watch.answered("ghost-1", "me-1")
    watch.joined(1.0)
    watch.waiting(2.0)
    due = watch.due(2.0 + BOUND)
    assert due is not None and due.leader is None


def test_a_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="bound_s"):
        AssignmentWatch(0)


def test_the_messages_name_the_group_and_what_to_check() -> None:
    first = rejoin_message("gepa-sidecar", "gepa.traffic", Rejoin(31.4, True, None, 1), None)
    assert first.startswith("consumer group gepa-sidecar: no partition assigned after 31s")
    assert "topic gepa.traffic exists" in first and "rejoining" in first

    later = rejoin_message("g", "t", Rejoin(62.0, False, None, 2), None)
    assert "g" in later and "rejoin 2" in later

    ghost = rejoin_message("g", "t", Rejoin(30.0, True, "ghost-1", 1), "ghost-1")
    assert "leader ghost-1 is not a member" in ghost and "in its place" in ghost

    assert str(Recovered(40.2, 2)) == "joined after 40s unassigned and 2 rejoin(s)"
