"""The shadow gate with weighted pairs: the weighted signed-rank test against an oracle that
enumerates every sign assignment, its normal approximation against its exact count, a skewed
sample that no longer passes a candidate worse on most traffic, and equal weights giving the
unweighted gate exactly."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.shadow.gate import (
    EXACT_MAX_N,
    Pair,
    decide,
    effective_size,
    signed_rank_test,
)
from sidecar.shadow.signed_rank import _weighted_exact_tails
from tests.unit.test_shadow_gate import RULES, average_ranks


def enumerated_p(deltas: list[int], weights: list[float]) -> tuple[float, float]:
    """P(S >= W+), P(S >= W-) with S = sum(w * rank) over a random sign assignment, by trying
    all 2^n of them (zero differences dropped, average ranks for ties)."""
    kept = [(d, w) for d, w in zip(deltas, weights, strict=True) if d != 0]
    ranks = average_ranks([abs(d) for d, _ in kept])
    scores = [w * r for (_, w), r in zip(kept, ranks, strict=True)]
    w_plus = sum(a for a, (d, _) in zip(scores, kept, strict=True) if d > 0)
    w_minus = sum(scores) - w_plus
    totals = [
        sum(a for a, sign in zip(scores, signs, strict=True) if sign)
        for signs in itertools.product((False, True), repeat=len(scores))
    ]
    outcomes = 2 ** len(scores)
    noise = 1e-9
    return (
        sum(t >= w_plus - noise for t in totals) / outcomes,
        sum(t >= w_minus - noise for t in totals) / outcomes,
    )


@settings(max_examples=80, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(-4, 4), st.sampled_from([1.0, 2.0, 5.0, 20.0])),
        min_size=1,
        max_size=11,
    )
)
def test_weighted_exact_p_values_match_enumeration(data: list[tuple[int, float]]) -> None:
    deltas = [d for d, _ in data]
    weights = [w for _, w in data]
    result = signed_rank_test(deltas, weights)
    better, worse = enumerated_p(deltas, weights)
    assert result.p_better == pytest.approx(better, abs=1e-12)
    assert result.p_worse == pytest.approx(worse, abs=1e-12)


def test_the_normal_approximation_follows_the_exact_count() -> None:
    """Past EXACT_MAX_N the weighted test is approximated; on 30 pairs (2^30 assignments,
    counted by meeting in the middle as the oracle) the two agree closely."""
    rng = random.Random(11)
    for _ in range(5):
        deltas = [rng.choice([-3, -2, -1, 1, 2, 3, 4]) for _ in range(30)]
        weights = [rng.choice([1.0, 4.0, 20.0]) for _ in range(30)]
        result = signed_rank_test(deltas, weights)
        assert not result.exact
        heaviest = max(weights)
        ranks = average_ranks([abs(d) for d in deltas])
        scores = [2 * r * w / heaviest for r, w in zip(ranks, weights, strict=True)]
        w2_plus = sum(a for a, d in zip(scores, deltas, strict=True) if d > 0)
        exact = _weighted_exact_tails(scores, w2_plus, sum(scores) - w2_plus)
        assert result.p_better == pytest.approx(exact[0], abs=0.01)
        assert result.p_worse == pytest.approx(exact[1], abs=0.01)


def skewed(rare_delta: float, common_delta: float) -> list[Pair]:
    """40 pairs of a rare segment kept whole (weight 1) and 40 of a common one kept at 5%
    (weight 20)."""
    rare = [Pair("rare", 0.5 + rare_delta, 0.5, 1.0) for _ in range(40)]
    common = [Pair("common", 0.5 + common_delta, 0.5, 20.0) for _ in range(40)]
    return rare + common


def test_a_candidate_better_only_on_the_oversampled_segment_does_not_pass() -> None:
    """+0.3 on the rare segment, -0.05 on the common one (within segment_delta, so no
    segment rule applies): unweighted it passes; on traffic it is worse, and fails."""
    pairs = skewed(0.3, -0.05)
    unweighted = decide([Pair(p.segment, p.candidate, p.champion) for p in pairs], RULES, False)
    assert unweighted.outcome == "pass"
    decision = decide(pairs, RULES, deadline_passed=False)
    assert decision.outcome == "fail", decision.reason
    assert "worse than the champion" in decision.reason
    figures = decision.figures
    assert figures["mean_delta"] == pytest.approx((40 * 0.3 - 800 * 0.05) / 840)
    assert figures["shadow_mean"] == pytest.approx((40 * 0.8 + 800 * 0.45) / 840)
    assert figures["champion_mean"] == pytest.approx(0.5)
    assert figures["method"] == "weighted-wilcoxon-normal"
    assert figures["n_effective"] == pytest.approx(round(840**2 / (40 + 40 * 400), 1))
    assert (figures["n"], figures["wins"], figures["losses"]) == (80, 40, 40)
    assert figures["segments"] == {
        "common": {"n": 40, "mean_delta": pytest.approx(-0.05)},
        "rare": {"n": 40, "mean_delta": pytest.approx(0.3)},
    }


def test_a_candidate_better_on_most_traffic_passes_despite_the_oversampled_segment() -> None:
    """The mirror case: worse on the rare segment by less than segment_delta, better on the
    common one: unweighted it looks worse; on traffic it is better, and passes."""
    pairs = skewed(-0.08, 0.1)
    unweighted = decide([Pair(p.segment, p.candidate, p.champion) for p in pairs], RULES, False)
    assert unweighted.outcome != "pass"
    decision = decide(pairs, RULES, deadline_passed=False)
    assert decision.outcome == "pass", decision.reason
    assert decision.figures["mean_delta"] == pytest.approx((-40 * 0.08 + 800 * 0.1) / 840)


def test_weights_must_be_positive_and_finite() -> None:
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="weight"):
            Pair(None, 0.5, 0.5, bad)
    with pytest.raises(ValueError, match="2 weights for 3 differences"):
        signed_rank_test([0.1, 0.2, -0.1], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive and finite"):
        signed_rank_test([0.1], [0.0])


def test_kish_effective_size() -> None:
    assert effective_size([3.0] * 12) == 12.0
    assert effective_size([1.0, 1.0, 4.0]) == pytest.approx(36 / 18)
    assert effective_size([]) == 0.0


pairs_strategy = st.lists(
    st.tuples(
        st.sampled_from(["billing", "shipping", None]),
        st.integers(0, 10),
        st.integers(0, 10),
    ),
    min_size=0,
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(raw=pairs_strategy, weight=st.floats(min_value=0.01, max_value=1000.0))
def test_equal_weights_give_the_unweighted_gate_exactly(
    raw: list[tuple[str | None, int, int]], weight: float
) -> None:
    plain = [Pair(segment, a / 10, b / 10) for segment, a, b in raw]
    weighted = [Pair(segment, a / 10, b / 10, weight) for segment, a, b in raw]
    assert decide(weighted, RULES, False) == decide(plain, RULES, False)
    assert decide(weighted, RULES, True) == decide(plain, RULES, True)


def test_the_exact_weighted_count_is_used_up_to_the_exact_limit() -> None:
    deltas = [1, -2, 3] * (EXACT_MAX_N // 3)
    result = signed_rank_test(deltas, [1.0, 5.0, 1.0] * (EXACT_MAX_N // 3))
    assert result.exact and result.n == len(deltas)
