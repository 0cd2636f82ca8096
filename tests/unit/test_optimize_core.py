"""The GEPA engine's pure rules: the Pareto frontier, selection, acceptance, merge, budget."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.optimize.acceptance import accept
from sidecar.optimize.budget import Budget, BudgetGuard
from sidecar.optimize.frontier import fronts, pareto_frontier, sample_parent
from sidecar.optimize.merge import ancestors, common_ancestor, merged_components
from sidecar.optimize.selection import (
    MinibatchSampler,
    next_component,
    pareto_fraction,
    split_instances,
)

score_values = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.8, 0.81, 0.9, 1.0])
score_tables = st.dictionaries(
    keys=st.integers(1, 8),
    values=st.dictionaries(st.integers(100, 106), score_values, min_size=1),
    min_size=1,
    max_size=8,
)


# --- the frontier ------------------------------------------------------------------------------


def test_each_instance_keeps_its_best_and_the_sole_bests_survive() -> None:
    scores = {
        1: {10: 0.9, 11: 0.2, 12: 0.5},  # best on 10
        2: {10: 0.1, 11: 0.8, 12: 0.5},  # best on 11; ties on 12
        3: {10: 0.5, 11: 0.5, 12: 0.4},  # best nowhere: off the frontier
    }
    frontier = pareto_frontier(scores)
    assert frontier.fronts == {10: {1}, 11: {2}, 12: {1, 2}}
    assert frontier.wins == {1: {10, 12}, 2: {11, 12}}
    assert frontier.candidates == [1, 2]


def test_epsilon_turns_near_misses_into_ties() -> None:
    scores = {1: {10: 0.81}, 2: {10: 0.80}}
    assert fronts(scores) == {10: {1}}
    assert fronts(scores, epsilon=0.02) == {10: {1, 2}}


def test_a_candidate_winning_a_subset_of_anothers_instances_is_pruned() -> None:
    scores = {
        1: {10: 1.0, 11: 1.0, 12: 0.0},
        2: {10: 1.0, 11: 0.0, 12: 0.0},  # wins only 10, which 1 also wins
        3: {10: 0.0, 11: 0.0, 12: 1.0},
    }
    frontier = pareto_frontier(scores)
    assert set(frontier.wins) == {1, 3}
    assert frontier.fronts[10] == {1}


def test_a_clone_is_pruned_but_stays_a_contender_for_merge() -> None:
    tied = {1: {10: 0.5, 11: 0.5}, 2: {10: 0.5, 11: 0.5}, 3: {10: 0.1, 11: 0.1}}
    frontier = pareto_frontier(tied)
    assert set(frontier.wins) == {1}  # the newer of two equals adds nothing to draw from
    assert frontier.fronts == {10: {1}, 11: {1}}
    assert frontier.contenders == {1, 2}


def test_wins_that_others_jointly_cover_are_pruned() -> None:
    scores = {
        1: {10: 1.0, 11: 1.0, 12: 0.0},
        2: {10: 0.0, 11: 1.0, 12: 1.0},
        3: {10: 1.0, 11: 0.0, 12: 1.0},  # each of its wins is someone else's too
        4: {10: 0.5, 11: 1.0, 12: 0.5},  # wins 11 only: covered by 1 and 2
    }
    frontier = pareto_frontier(scores)
    assert set(frontier.wins) == {1, 2}
    assert all(frontier.fronts[instance] for instance in (10, 11, 12))


def test_unscored_instances_are_not_won() -> None:
    frontier = pareto_frontier({1: {10: 0.5}, 2: {11: 0.1}})
    assert frontier.wins == {1: {10}, 2: {11}}


@settings(max_examples=300, deadline=None)
@given(score_tables, st.sampled_from([0.0, 0.01, 0.05]))
def test_frontier_invariants(scores: dict[int, dict[int, float]], epsilon: float) -> None:
    frontier = pareto_frontier(scores, epsilon)
    all_fronts = fronts(scores, epsilon)
    # every scored instance still has a winner after pruning
    assert set(frontier.fronts) == set(all_fronts)
    for instance, members in frontier.fronts.items():
        assert members, instance
        assert members <= all_fronts[instance]
        best = max(per[instance] for per in scores.values() if instance in per)
        assert all(scores[c][instance] >= best - epsilon for c in members)
    # no kept candidate is dominated: each wins some instance no other kept candidate wins
    for a, wins_a in frontier.wins.items():
        assert wins_a
        others = set().union(*(w for b, w in frontier.wins.items() if b != a))
        assert not wins_a <= others
    assert set(frontier.wins) <= frontier.contenders == {c for m in all_fronts.values() for c in m}
    # a candidate that is the only one within epsilon of the best somewhere is kept
    for members in all_fronts.values():
        if len(members) == 1:
            assert next(iter(members)) in frontier.wins
    # weights are instances won, and cover every instance at least once
    assert sum(frontier.weight(c) for c in frontier.wins) >= len(all_fronts)


@settings(max_examples=200, deadline=None)
@given(score_tables)
def test_a_wider_epsilon_only_widens_fronts(scores: dict[int, dict[int, float]]) -> None:
    narrow = fronts(scores, 0.0)
    wide = fronts(scores, 0.1)
    assert all(narrow[i] <= wide[i] for i in narrow)


def test_parents_are_drawn_in_proportion_to_instances_won() -> None:
    scores = {1: {10: 1.0, 11: 1.0, 12: 1.0, 13: 0.0}, 2: {10: 0.0, 11: 0.0, 12: 0.0, 13: 1.0}}
    frontier = pareto_frontier(scores)
    rng = random.Random(3)
    draws = Counter(sample_parent(frontier, rng) for _ in range(4000))
    assert set(draws) == {1, 2}
    assert draws[1] / 4000 == pytest.approx(0.75, abs=0.03)


def test_an_empty_frontier_cannot_give_a_parent() -> None:
    with pytest.raises(ValueError, match="empty"):
        sample_parent(pareto_frontier({}), random.Random(1))


# --- selection ---------------------------------------------------------------------------------


def test_components_take_turns() -> None:
    names = ["system_prompt", "few_shot", "answer_style"]
    turns = [next_component(names, n) for n in range(6)]
    assert turns == ["answer_style", "few_shot", "system_prompt"] * 2
    with pytest.raises(ValueError):
        next_component([], 0)


def test_minibatches_cover_every_instance_before_repeating() -> None:
    sampler = MinibatchSampler(range(10), 3, random.Random(5))
    seen: list[int] = []
    for _ in range(3):
        batch = sampler.next()
        assert len(batch) == len(set(batch)) == 3
        seen.extend(batch)
    assert len(set(seen)) == 9  # 9 of 10 drawn, none twice, in the first pass
    assert len(sampler.next()) == 3


def test_minibatches_of_a_small_pool() -> None:
    assert sorted(MinibatchSampler([7, 8], 3, random.Random(1)).next()) == [7, 8]
    assert MinibatchSampler([], 3, random.Random(1)).next() == []
    with pytest.raises(ValueError):
        MinibatchSampler([1], 0, random.Random(1))


def test_splits_are_stratified_by_segment_and_disjoint() -> None:
    instances = [(i, "billing") for i in range(80)] + [(100 + i, "shipping") for i in range(20)]
    instances += [(200, None), (201, None)]
    feedback, pareto = split_instances(instances, 0.5)
    assert not set(feedback) & set(pareto)
    assert len(feedback) + len(pareto) == 102
    assert sum(1 for i in pareto if i < 100) == 40
    assert sum(1 for i in pareto if 100 <= i < 200) == 10
    assert sum(1 for i in pareto if i >= 200) == 1


def test_a_small_segment_still_lands_in_both_sets() -> None:
    feedback, pareto = split_instances([(1, "rare"), (2, "rare"), (3, "x")], 0.1)
    assert {1, 2} & set(feedback) and {1, 2} & set(pareto)
    with pytest.raises(ValueError):
        split_instances([(1, None)], 1.0)


def test_the_same_events_split_the_same_way_in_any_order() -> None:
    """Two runs over the same window score the champion on the same Pareto set."""
    instances = [(i, "billing" if i % 3 else None) for i in range(60)]
    first = split_instances(instances, 0.3)
    assert split_instances(list(reversed(instances)), 0.3) == first
    assert split_instances(instances[::2] + instances[1::2], 0.3) == first
    # one more event moves at most one event of the old window across
    grown = split_instances([*instances, (60, None)], 0.3)
    assert len(set(first[1]) ^ (set(grown[1]) - {60})) <= 1


# --- acceptance --------------------------------------------------------------------------------


def test_a_child_must_beat_its_parent_on_the_same_minibatch() -> None:
    parent = {1: 0.5, 2: 0.5, 3: 0.5}
    assert accept(parent, {1: 0.6, 2: 0.5, 3: 0.5})
    assert not accept(parent, {1: 0.5, 2: 0.5, 3: 0.5})  # a tie is not progress
    assert not accept(parent, {1: 0.6, 2: 0.5, 3: 0.5}, margin=0.2)
    assert accept(parent, {1: 0.9, 2: 0.5, 3: 0.5}, margin=0.2)
    assert not accept({}, {})
    with pytest.raises(ValueError, match="same minibatch"):
        accept(parent, {1: 1.0})


# --- merge -------------------------------------------------------------------------------------

LINEAGE = {2: [1], 3: [1], 4: [2], 5: [3], 6: [4, 5]}


def test_ancestry_and_the_nearest_common_ancestor() -> None:
    assert ancestors(6, LINEAGE) == {6: 0, 4: 1, 5: 1, 2: 2, 3: 2, 1: 3}
    assert common_ancestor(4, 5, LINEAGE) == 1
    assert common_ancestor(4, 2, LINEAGE) == 2
    assert common_ancestor(4, 9, LINEAGE) is None


def test_merge_takes_each_component_from_the_side_that_changed_it() -> None:
    base = {"system": "S", "style": "T"}
    a = {"system": "S2", "style": "T"}
    b = {"system": "S", "style": "T2"}
    assert merged_components(base, a, b) == {"system": "S2", "style": "T2"}


def test_merge_refuses_conflicts_and_merges_that_add_nothing() -> None:
    base = {"system": "S", "style": "T"}
    assert (
        merged_components(base, {"system": "A", "style": "T"}, {"system": "B", "style": "T"})
        is None
    )
    both = {"system": "S2", "style": "T2"}
    assert merged_components(base, both, {"system": "S2", "style": "T"}) is None
    assert merged_components(base, {"system": "S"}, {"system": "S", "style": "T"}) is None


# --- budget ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_metric_calls_are_a_hard_cap() -> None:
    guard = BudgetGuard(Budget(max_metric_calls=10, max_usd=100.0, max_seconds=60), Clock())
    assert guard.affordable(5) == 1  # the first call learns the price
    guard.record_calls(1, 0.0)
    assert guard.affordable(5) == 5
    guard.record_calls(5, 0.0)
    assert guard.affordable(5) == 4  # only what is left
    guard.record_calls(4, 0.0)
    assert guard.affordable(1) == 0
    assert guard.spend.stop_reason == "metric_calls"
    assert guard.exhausted


def test_usd_is_capped_at_the_dearest_call_seen() -> None:
    guard = BudgetGuard(Budget(max_metric_calls=1000, max_usd=1.0, max_seconds=60), Clock())
    guard.affordable(3)
    guard.record_calls(1, 0.1)  # 0.10 per call
    assert guard.affordable(20) == 9
    guard.record_calls(9, 0.9)
    assert guard.affordable(1) == 0
    assert guard.spend.stop_reason == "usd"
    assert guard.spend.usd <= 1.0 + 1e-9


def test_reflection_spend_counts_towards_usd() -> None:
    guard = BudgetGuard(Budget(max_metric_calls=1000, max_usd=0.5, max_seconds=60), Clock())
    guard.record_calls(1, 0.01)
    guard.record_usd(0.45)
    assert guard.affordable(10) == 4
    guard.record_usd(0.1)
    assert guard.exhausted and guard.spend.stop_reason == "usd"


def test_a_reflection_starts_only_if_it_fits_at_the_dearest_price_seen() -> None:
    guard = BudgetGuard(Budget(max_metric_calls=1000, max_usd=1.0, max_seconds=60), Clock())
    assert guard.reflection_affordable()  # the first one learns the price
    guard.record_usd(0.3)
    assert guard.reflection_affordable()
    guard.record_usd(0.3)
    assert guard.reflection_affordable()  # 0.6 spent, 0.3 more fits
    guard.record_usd(0.3)
    assert not guard.reflection_affordable()  # 0.9 + 0.3 would not
    assert guard.spend.stop_reason == "usd"
    assert guard.spend.usd <= 1.0


def test_unpriced_models_are_bounded_by_the_other_limits() -> None:
    guard = BudgetGuard(Budget(max_metric_calls=50, max_usd=0.0, max_seconds=60), Clock())
    assert guard.affordable(10) == 1
    guard.record_calls(1, 0.0)
    assert guard.affordable(10) == 10


def test_wall_time_and_patience_stop_a_run() -> None:
    clock = Clock()
    guard = BudgetGuard(Budget(max_metric_calls=50, max_usd=1.0, max_seconds=30), clock)
    clock.now = 30.0
    assert guard.affordable(1) == 0
    assert guard.spend.stop_reason == "wall_time"
    patient = BudgetGuard(Budget(10, 1.0, 60, patience=2), Clock())
    patient.record_iteration(progressed=False)
    patient.record_iteration(progressed=True)
    patient.record_iteration(progressed=False)
    assert not patient.exhausted
    patient.record_iteration(progressed=False)
    assert patient.spend.stop_reason == "no_progress"


def test_budgets_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Budget(max_metric_calls=0, max_usd=1.0, max_seconds=1)
    with pytest.raises(ValueError):
        Budget(max_metric_calls=1, max_usd=1.0, max_seconds=0)


def test_a_pareto_set_takes_at_most_a_twentieth_of_the_budget() -> None:
    assert pareto_fraction(0.5, 48, 500) == 0.5  # 24 events fit in 25 calls
    assert pareto_fraction(0.5, 48, 200) == pytest.approx(10 / 48)
    assert pareto_fraction(0.5, 48, 7) == pytest.approx(2 / 48)  # never fewer than two
    assert pareto_fraction(0.5, 2, 7) == 0.5
    feedback, pareto = split_instances(
        [(i, None) for i in range(48)], pareto_fraction(0.5, 48, 200)
    )
    assert (len(pareto), len(feedback)) == (10, 38)
