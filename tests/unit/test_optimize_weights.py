"""The optimizer weighs each event by the traffic it stands for (1/its sample rate): on a skewed
sample (a rare segment kept whole, a common one at 5%) its means follow traffic, not the
sample; with equal rates every figure is, to the last bit, the unweighted one."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.optimize.acceptance import accept
from sidecar.optimize.evidence import paired_evidence
from sidecar.optimize.frontier import mean_score, pareto_frontier, sample_parent
from sidecar.optimize.weights import relative_weights, weighted_mean

RARE = range(0, 50)  # kept at 1.0: 50 events of traffic
COMMON = range(50, 100)  # kept at 0.05: each stands for 20, 1,000 in all
RATES: dict[int, float | None] = {e: 1.0 for e in RARE} | {e: 0.05 for e in COMMON}
WEIGHTS = relative_weights(RATES)

scores = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
rate_values = st.floats(min_value=0.001, max_value=1.0, allow_nan=False)


def traffic_mean(rare: float, common: float) -> float:
    """The mean over the traffic the sample stands for, by hand."""
    return (50 * rare + 1000 * common) / 1050


def test_relative_weights_are_one_over_rate_scaled_to_the_heaviest() -> None:
    assert relative_weights({1: 0.05, 2: 1.0, 3: None, 4: 0.5}) == {
        1: 1.0,
        2: 0.05,
        3: 0.05,
        4: 0.1,
    }
    assert relative_weights({1: 0.3, 2: 0.3}) == {1: 1.0, 2: 1.0}
    assert relative_weights({}) == {}
    with pytest.raises(ValueError, match="sample rate"):
        relative_weights({1: 0.0})


def test_a_skewed_sample_no_longer_decides_the_mean() -> None:
    """The candidate is better on the rare segment (+0.3) and worse on the common one (-0.1):
    counted once each, the 50 rare events make it look better; weighted, it is worse, by
    exactly what traffic says."""
    champion = {e: 0.5 for e in RARE} | {e: 0.6 for e in COMMON}
    candidate = {e: 0.8 for e in RARE} | {e: 0.5 for e in COMMON}
    pareto = sorted(champion)
    plain = paired_evidence(candidate, champion, pareto)
    weighted = paired_evidence(candidate, champion, pareto, weights=WEIGHTS)
    assert plain.mean_delta == pytest.approx(0.1)
    assert weighted.mean_delta == pytest.approx(traffic_mean(0.3, -0.1))
    assert weighted.mean_delta < 0 < plain.mean_delta
    assert weighted.pareto_mean == pytest.approx(traffic_mean(0.8, 0.5))
    assert weighted.champion_mean == pytest.approx(traffic_mean(0.5, 0.6))
    assert (weighted.wins, weighted.losses, weighted.n) == (50, 50, 100)  # counts stay counts
    assert mean_score(candidate, WEIGHTS) == pytest.approx(traffic_mean(0.8, 0.5))
    assert mean_score(candidate) == pytest.approx(0.65)


def test_acceptance_weighs_the_minibatch() -> None:
    """A child better on two rare events and worse on one common one: accepted by the plain
    totals, rejected by the traffic-weighted ones; the margin scales with the mean weight."""
    parent = {0: 0.5, 1: 0.5, 50: 0.6}
    child = {0: 0.9, 1: 0.9, 50: 0.4}
    assert accept(parent, child)
    assert not accept(parent, child, weights=WEIGHTS)
    better = {0: 0.5, 1: 0.5, 50: 0.8}
    assert accept(parent, better, weights=WEIGHTS)  # +0.2 on 1.1 weight in all
    mean_weight = (0.05 + 0.05 + 1.0) / 3
    assert accept(parent, better, margin=0.19 / mean_weight, weights=WEIGHTS)
    assert not accept(parent, better, margin=0.21 / mean_weight, weights=WEIGHTS)


def test_the_frontier_counts_wins_by_the_traffic_they_stand_for() -> None:
    """Candidate 1 wins the 50 rare instances, candidate 2 the 50 common ones: equal by count,
    but 2 stands for 20 times the traffic, so it is drawn 20 times as often and listed first."""
    table = {
        1: {e: 1.0 if e in RARE else 0.0 for e in range(100)},
        2: {e: 0.0 if e in RARE else 1.0 for e in range(100)},
    }
    plain = pareto_frontier(table)
    weighted = pareto_frontier(table, weights=WEIGHTS)
    assert plain.weight(1) == plain.weight(2) == 50
    assert weighted.weight(1) == pytest.approx(2.5) and weighted.weight(2) == 50.0
    assert weighted.candidates == [2, 1]
    rng = random.Random(5)
    draws = [sample_parent(weighted, rng) for _ in range(2100)]
    assert draws.count(1) == pytest.approx(100, abs=40)


def test_pruning_drops_the_candidate_weakest_on_traffic() -> None:
    """Two candidates tied (within epsilon) on both instances cover each other's wins: the one
    with the lower mean goes. Counted once each, 2 is weaker; on traffic, 1 is."""
    table = {1: {0: 1.0, 50: 0.92}, 2: {0: 0.9, 50: 1.0}}
    assert set(pareto_frontier(table, epsilon=0.1).wins) == {1}
    assert set(pareto_frontier(table, epsilon=0.1, weights=WEIGHTS).wins) == {2}


@settings(max_examples=60, deadline=None)
@given(
    rate=rate_values,
    parent=st.lists(scores, min_size=1, max_size=8),
    child=st.lists(scores, min_size=8, max_size=8),
    margin=st.floats(min_value=0.0, max_value=1.0),
)
def test_equal_rates_give_the_unweighted_figures_exactly(
    rate: float, parent: list[float], child: list[float], margin: float
) -> None:
    events = range(len(parent))
    weights = relative_weights(dict.fromkeys(events, rate))
    first = dict(zip(events, parent, strict=True))
    second = {e: child[e] for e in events}
    assert weighted_mean(first, weights) == mean_score(first)
    assert accept(first, second, margin, weights) == accept(first, second, margin)
    assert paired_evidence(second, first, list(events), 0.01, weights) == paired_evidence(
        second, first, list(events), 0.01
    )
    table = {1: first, 2: second}
    assert pareto_frontier(table, 0.01, weights) == pareto_frontier(table, 0.01, dict(weights))
    assert pareto_frontier(table, 0.01, weights).wins == pareto_frontier(table, 0.01).wins
    one, other = pareto_frontier(table, 0.01, weights), pareto_frontier(table, 0.01)
    assert [one.weight(c) for c in one.candidates] == [other.weight(c) for c in other.candidates]
    assert sample_parent(one, random.Random(3)) == sample_parent(other, random.Random(3))
