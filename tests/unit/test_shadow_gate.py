"""The shadow gate: Wilcoxon p-values against hand counts and independent oracles (every sign
assignment enumerated; the sign test's binomial tail), and the gate's decisions (hypothesis: an
identical candidate never passes, a uniformly better one does once it has enough pairs)."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.settings import Settings
from sidecar.shadow.gate import (
    EXACT_MAX_N,
    GateRules,
    Pair,
    decide,
    signed_rank_test,
)

RULES = GateRules(
    min_pairs=30, alpha=0.05, min_effect=0.02, segment_delta=0.1, segment_min_pairs=10
)


def average_ranks(magnitudes: list[int]) -> list[float]:
    """Oracle ranks: the values below, plus the middle of the tied run (1-based)."""
    return [
        sum(1 for m in magnitudes if m < x) + (sum(1 for m in magnitudes if m == x) + 1) / 2
        for x in magnitudes
    ]


def enumerated_p(deltas: list[int]) -> tuple[float, float]:
    """P(W+ >= observed), P(W+ <= observed) by trying all 2^n sign assignments."""
    nonzero = [d for d in deltas if d != 0]
    ranks = average_ranks([abs(d) for d in nonzero])
    observed = sum(r for r, d in zip(ranks, nonzero, strict=True) if d > 0)
    at_least = at_most = 0
    for signs in itertools.product((False, True), repeat=len(ranks)):
        w_plus = sum(r for r, positive in zip(ranks, signs, strict=True) if positive)
        at_least += w_plus >= observed
        at_most += w_plus <= observed
    outcomes = 2 ** len(ranks)
    return at_least / outcomes, at_most / outcomes


def untied_upper_tails(n: int) -> list[float]:
    """P(W+ >= w) for w = 0..n(n+1)/2 with ranks 1..n, by counting subset sums."""
    counts = [1] + [0] * (n * (n + 1) // 2)
    for rank in range(1, n + 1):
        for total in range(len(counts) - 1, rank - 1, -1):
            counts[total] += counts[total - rank]
    return [sum(counts[w:]) / 2**n for w in range(len(counts))]


def tied_upper_tail(deltas: list[int]) -> float:
    """P(W+ >= observed) with average ranks, counting subset sums of the doubled ranks."""
    nonzero = [d for d in deltas if d != 0]
    doubled = [round(2 * r) for r in average_ranks([abs(d) for d in nonzero])]
    observed = sum(r for r, d in zip(doubled, nonzero, strict=True) if d > 0)
    counts = [1] + [0] * sum(doubled)
    for rank in doubled:
        for total in range(len(counts) - 1, rank - 1, -1):
            counts[total] += counts[total - rank]
    return sum(counts[observed:]) / 2 ** len(doubled)


def deltas_with_w_plus(n: int, w_plus: int) -> list[float]:
    """n distinct magnitudes (ranks 1..n) whose positive ones sum to `w_plus` in ranks."""
    positive: set[int] = set()
    left = w_plus
    for rank in range(n, 0, -1):
        if rank <= left:
            positive.add(rank)
            left -= rank
    return [(r if r in positive else -r) / (n + 1) for r in range(1, n + 1)]


def binomial_upper_tail(successes: int, trials: int) -> float:
    return sum(math.comb(trials, k) for k in range(successes, trials + 1)) / 2**trials


def pairs_of(deltas: list[float], segment: str | None = None, base: float = 0.5) -> list[Pair]:
    """Pairs around a champion score of `base` with the given differences."""
    return [Pair(segment, base + d / 2, base - d / 2) for d in deltas]


# Wilcoxon signed-rank statistic and p-values


def test_five_positive_differences_have_exact_p_one_in_32() -> None:
    test = signed_rank_test([0.1, 0.2, 0.3, 0.4, 0.5])
    assert (test.n, test.w_plus, test.w_minus, test.exact) == (5, 15.0, 0.0, True)
    assert test.p_better == 1 / 32
    assert test.p_worse == 1.0


def test_tied_magnitudes_share_their_average_rank() -> None:
    # |d| = 1, 1, 1, 2 -> ranks 2, 2, 2, 4; W+ = 8, W- = 2. Of the 16 sign assignments,
    # W+ >= 8 needs the 4 and at least two of the 2s: 3 + 1 = 4; W+ >= 2 fails only for none.
    test = signed_rank_test([1.0, 1.0, -1.0, 2.0])
    assert (test.w_plus, test.w_minus) == (8.0, 2.0)
    assert test.p_better == 4 / 16
    assert test.p_worse == 15 / 16


def test_zero_differences_are_dropped() -> None:
    # Non-zero 0.3, 0.2, -0.1 -> ranks 3, 2, 1; W+ = 5. Subset sums of {1,2,3}: 0,1,2,3,3,4,5,6.
    test = signed_rank_test([0.0, 0.0, 0.3, 0.2, -0.1])
    assert (test.n, test.w_plus, test.w_minus) == (3, 5.0, 1.0)
    assert test.p_better == 2 / 8
    assert test.p_worse == 7 / 8


def test_no_nonzero_difference_gives_p_one_both_ways() -> None:
    test = signed_rank_test([0.0] * 40)
    assert (test.n, test.p_better, test.p_worse) == (0, 1.0, 1.0)
    assert signed_rank_test([]).p_better == 1.0


def test_float_noise_neither_splits_a_tie_nor_makes_a_win() -> None:
    # 0.7 - 0.6 and 0.8 - 0.7 differ in the last bits; they are the same difference.
    test = signed_rank_test([0.7 - 0.6, 0.8 - 0.7, 0.3 - 0.1 - 0.2])
    assert (test.n, test.w_plus) == (2, 3.0)
    assert test.p_better == 1 / 4


tenths = st.integers(min_value=0, max_value=10)


@given(st.lists(st.tuples(tenths, tenths), max_size=12))
def test_exact_p_matches_enumerating_every_sign_assignment(scores: list[tuple[int, int]]) -> None:
    test = signed_rank_test([a / 10 - b / 10 for a, b in scores])
    p_better, p_worse = enumerated_p([a - b for a, b in scores])
    assert test.exact
    assert test.p_better == pytest.approx(p_better, abs=1e-12)
    assert test.p_worse == pytest.approx(p_worse, abs=1e-12)


@pytest.mark.parametrize("n", range(EXACT_MAX_N, 31))
def test_normal_approximation_follows_the_exact_distribution(n: int) -> None:
    exact_tails = untied_upper_tails(n)
    for w_plus, exact in enumerate(exact_tails):
        test = signed_rank_test(deltas_with_w_plus(n, w_plus))
        assert test.w_plus == w_plus
        assert test.exact == (n <= EXACT_MAX_N)
        assert test.p_better == pytest.approx(exact, abs=0.004)
        if 0.01 <= exact <= 0.2:
            assert test.p_better == pytest.approx(exact, rel=0.1)


@pytest.mark.parametrize("seed", range(20))
def test_normal_approximation_with_ties_follows_the_exact_distribution(seed: int) -> None:
    # Pointwise-shaped: differences on a judge's 0.1 grid, so |d| ties in about ten groups.
    rng = random.Random(seed)
    deltas = [rng.choice((-1, 1)) * rng.randint(1, 10) for _ in range(rng.randint(26, 40))]
    test = signed_rank_test([d / 10 for d in deltas])
    assert not test.exact
    assert test.p_better == pytest.approx(tied_upper_tail(deltas), abs=0.01)


@pytest.mark.parametrize(
    ("wins", "losses"), [(20, 5), (9, 1), (3, 3), (40, 22), (18, 30), (17, 9), (300, 260)]
)
def test_all_tied_magnitudes_reduce_to_the_sign_test(wins: int, losses: int) -> None:
    test = signed_rank_test([1.0] * wins + [-1.0] * losses)
    expected = binomial_upper_tail(wins, wins + losses)
    tolerance = 1e-12 if wins + losses <= EXACT_MAX_N else 0.002
    assert test.p_better == pytest.approx(expected, abs=tolerance)
    if 0.01 <= expected <= 0.2:
        assert test.p_better == pytest.approx(expected, rel=0.1)


@settings(max_examples=200)
@given(st.lists(st.floats(min_value=-1.0, max_value=1.0), max_size=60))
def test_negating_the_differences_swaps_the_p_values(deltas: list[float]) -> None:
    forward = signed_rank_test(deltas)
    backward = signed_rank_test([-d for d in deltas])
    assert (backward.p_better, backward.p_worse) == (forward.p_worse, forward.p_better)
    assert (backward.w_plus, backward.w_minus) == (forward.w_minus, forward.w_plus)
    assert 0.0 < forward.p_better <= 1.0


# The gate's decisions


def test_fewer_than_min_pairs_waits_then_fails_at_the_deadline() -> None:
    pairs = pairs_of([0.5] * 12)
    waiting = decide(pairs, RULES, deadline_passed=False)
    assert (waiting.outcome, waiting.reason) == ("wait", "collecting: 12 of 30 pairs")
    late = decide(pairs, RULES, deadline_passed=True)
    assert (late.outcome, late.reason) == ("fail", "deadline: only 12 of 30 pairs")
    assert late.figures["decision"] == "fail"
    assert late.figures["reason"] == late.reason


def test_no_pairs_waits_with_empty_figures() -> None:
    decision = decide([], RULES, deadline_passed=False)
    assert decision.outcome == "wait"
    assert decision.figures["n"] == 0
    assert decision.figures["shadow_mean"] is None
    assert decision.figures["mean_delta"] is None


def test_a_clearly_better_candidate_passes_with_its_figures() -> None:
    pairs = (
        pairs_of([0.2] * 30, "billing") + pairs_of([0.1] * 8, None) + pairs_of([-0.1] * 2, "misc")
    )
    decision = decide(pairs, RULES, deadline_passed=False)
    assert decision.outcome == "pass"
    assert decision.reason.startswith("passed: +0.165 mean paired difference on 40 pairs ")
    assert "(38 better, 2 worse), Wilcoxon p=" in decision.reason
    assert decision.reason.endswith("; no segment regressed (1 with >= 10 pairs)")
    figures = json.loads(json.dumps(decision.figures))
    assert figures["n"] == 40
    assert (figures["wins"], figures["losses"], figures["ties"]) == (38, 2, 0)
    assert figures["shadow_mean"] - figures["champion_mean"] == pytest.approx(0.165)
    assert figures["mean_delta"] == pytest.approx(0.165)
    assert figures["p_value"] < 1e-6
    assert figures["p_worse"] > 0.99
    assert figures["method"] == "wilcoxon-normal"
    assert figures["segments"] == {"billing": {"n": 30, "mean_delta": pytest.approx(0.2)}}
    assert figures["regressed"] == []
    assert figures["decision"] == "pass"


def test_a_clear_loss_is_rejected() -> None:
    pairs = pairs_of([-0.2] * 25 + [0.1] * 5)
    decision = decide(pairs, RULES, deadline_passed=False)
    assert decision.outcome == "fail"
    assert decision.reason.startswith("rejected: worse than the champion: -0.150 mean paired")
    assert "(5 better, 25 worse)" in decision.reason


def test_an_identical_candidate_waits_then_fails_as_inconclusive() -> None:
    pairs = [Pair("a", 0.7, 0.7)] * 40
    waiting = decide(pairs, RULES, deadline_passed=False)
    assert waiting.outcome == "wait"
    assert waiting.reason == "collecting: inconclusive (p=1, alpha 0.05) on 40 pairs"
    late = decide(pairs, RULES, deadline_passed=True)
    assert (late.outcome, late.reason) == (
        "fail",
        "deadline: inconclusive (p=1, alpha 0.05) after 40 pairs",
    )
    assert late.figures["ties"] == 40


def test_a_significant_gain_below_the_minimum_effect_does_not_pass() -> None:
    pairs = pairs_of([0.01] * 40)
    waiting = decide(pairs, RULES, deadline_passed=False)
    assert waiting.outcome == "wait"
    assert waiting.figures["p_value"] < RULES.alpha
    assert "mean difference +0.010 below the minimum effect 0.02" in waiting.reason
    assert decide(pairs, RULES, deadline_passed=True).outcome == "fail"


def better_overall_with_segment(segment_deltas: list[float]) -> list[Pair]:
    return pairs_of([0.2] * 60, "a") + pairs_of(segment_deltas, "b")


def test_a_regressed_segment_blocks_a_pass_until_the_deadline() -> None:
    # Segment b: mean -0.2 over 10 pairs, but its own test is not significant (p = 112/1024).
    pairs = better_overall_with_segment([-0.5] * 5 + [0.1] * 5)
    waiting = decide(pairs, RULES, deadline_passed=False)
    assert waiting.outcome == "wait"
    assert waiting.reason == (
        "collecting: segment 'b' regressed (-0.200 mean on 10 pairs, p=0.11) on 70 pairs"
    )
    assert waiting.figures["regressed"] == ["b"]
    assert waiting.figures["p_value"] < 1e-6
    late = decide(pairs, RULES, deadline_passed=True)
    assert late.outcome == "fail"
    assert late.reason.startswith("deadline: segment 'b' regressed")


def test_a_segment_below_its_minimum_pairs_does_not_block() -> None:
    pairs = better_overall_with_segment([-0.5] * 5 + [0.1] * 5)
    rules = GateRules(
        min_pairs=30, alpha=0.05, min_effect=0.02, segment_delta=0.1, segment_min_pairs=11
    )
    decision = decide(pairs, rules, deadline_passed=False)
    assert decision.outcome == "pass"
    assert decision.figures["segments"] == {"a": {"n": 60, "mean_delta": pytest.approx(0.2)}}


def test_a_segment_that_tests_worse_rejects_a_candidate_better_overall() -> None:
    pairs = better_overall_with_segment([-0.3] * 10)
    decision = decide(pairs, RULES, deadline_passed=False)
    assert decision.outcome == "fail"
    assert decision.reason.startswith("rejected: segment 'b' worse than the champion: -0.300")
    assert "Wilcoxon p=0.00098 < alpha 0.05" in decision.reason


def test_several_regressed_segments_name_the_worst() -> None:
    mixed = [-0.5] * 5 + [0.1] * 5
    milder = [-0.4] * 5 + [0.1] * 5
    pairs = better_overall_with_segment(mixed) + pairs_of(milder, "c")
    decision = decide(pairs, RULES, deadline_passed=False)
    assert decision.figures["regressed"] == ["b", "c"]
    assert "segment 'b' regressed (-0.200 mean on 10 pairs, p=0.11) and 1 more" in decision.reason


def test_pairwise_verdicts_are_judged_as_a_sign_test() -> None:
    verdicts = [(1.0, 0.0)] * 20 + [(0.5, 0.5)] * 5 + [(0.0, 1.0)] * 5
    decision = decide([Pair(None, c, k) for c, k in verdicts], RULES, deadline_passed=False)
    assert decision.outcome == "pass"
    assert decision.figures["mean_delta"] == pytest.approx(0.5)
    assert decision.figures["p_value"] == pytest.approx(binomial_upper_tail(20, 25), abs=1e-12)
    assert (decision.figures["wins"], decision.figures["ties"]) == (20, 5)


def test_rules_come_from_the_settings() -> None:
    settings = Settings(
        shadow_min_pairs=12,
        shadow_alpha=0.01,
        shadow_min_effect=0.05,
        shadow_segment_delta=0.2,
        shadow_segment_min_pairs=4,
    )
    assert GateRules.from_settings(settings) == GateRules(
        min_pairs=12, alpha=0.01, min_effect=0.05, segment_delta=0.2, segment_min_pairs=4
    )


@pytest.mark.parametrize(
    "change",
    [
        {"min_pairs": 0},
        {"segment_min_pairs": 0},
        {"alpha": 0.0},
        {"alpha": 1.0},
        {"min_effect": -0.01},
        {"segment_delta": -0.1},
    ],
)
def test_invalid_rules_are_refused(change: dict[str, float]) -> None:
    values: dict[str, float] = {
        "min_pairs": 30,
        "alpha": 0.05,
        "min_effect": 0.02,
        "segment_delta": 0.1,
        "segment_min_pairs": 10,
    } | change
    with pytest.raises(ValueError, match="must"):
        GateRules(**values)


@pytest.mark.parametrize(("candidate", "champion"), [(1.5, 0.5), (0.5, -0.1), (math.nan, 0.5)])
def test_scores_outside_zero_to_one_are_refused(candidate: float, champion: float) -> None:
    with pytest.raises(ValueError, match=r"scores must be in 0\.\.1"):
        Pair(None, candidate, champion)


# Properties of the gate

scores = st.floats(min_value=0.0, max_value=1.0)
segments = st.sampled_from([None, "a", "b", "c"])
rules = st.builds(
    GateRules,
    min_pairs=st.integers(min_value=1, max_value=40),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
    min_effect=st.floats(min_value=0.0, max_value=0.2),
    segment_delta=st.floats(min_value=0.0, max_value=0.3),
    segment_min_pairs=st.integers(min_value=1, max_value=15),
)


@given(st.lists(st.tuples(segments, scores), max_size=60), rules, st.booleans())
def test_an_identical_candidate_never_passes(
    events: list[tuple[str | None, float]], gate: GateRules, deadline_passed: bool
) -> None:
    decision = decide([Pair(s, x, x) for s, x in events], gate, deadline_passed)
    assert decision.outcome != "pass"
    assert decision.figures["p_value"] == 1.0


@st.composite
def uniformly_better(draw: st.DrawFn) -> tuple[list[Pair], GateRules]:
    """At least min_pairs (>= 8) pairs, each better by at least min_effect + a margin."""
    gate = draw(rules.filter(lambda g: g.min_pairs >= 8))
    step = gate.min_effect + draw(st.floats(min_value=0.01, max_value=0.3))
    count = draw(st.integers(min_value=gate.min_pairs, max_value=gate.min_pairs + 30))
    pairs = []
    for _ in range(count):
        champion = draw(st.floats(min_value=0.0, max_value=1.0 - step))
        extra = draw(st.floats(min_value=0.0, max_value=max(0.0, 1.0 - champion - step)))
        pairs.append(Pair(draw(segments), min(1.0, champion + step + extra), champion))
    return pairs, gate


@settings(max_examples=200)
@given(uniformly_better())
def test_a_uniformly_better_candidate_passes_with_enough_pairs(
    case: tuple[list[Pair], GateRules],
) -> None:
    pairs, gate = case
    decision = decide(pairs, gate, deadline_passed=False)
    assert decision.outcome == "pass", decision.reason
    assert decide(pairs[: gate.min_pairs - 1], gate, deadline_passed=False).outcome == "wait"


@settings(max_examples=200)
@given(st.lists(st.tuples(segments, scores, scores), max_size=60), rules)
def test_swapping_candidate_and_champion_swaps_the_p_values(
    events: list[tuple[str | None, float, float]], gate: GateRules
) -> None:
    forward = decide([Pair(s, a, b) for s, a, b in events], gate, deadline_passed=False).figures
    backward = decide([Pair(s, b, a) for s, a, b in events], gate, deadline_passed=False).figures
    assert (backward["p_value"], backward["p_worse"]) == (forward["p_worse"], forward["p_value"])
    assert (backward["wins"], backward["losses"]) == (forward["losses"], forward["wins"])


@given(rules, st.booleans(), st.data())
def test_fewer_than_min_pairs_never_passes(
    gate: GateRules, deadline_passed: bool, data: st.DataObject
) -> None:
    events = data.draw(st.lists(st.tuples(segments, scores, scores), max_size=gate.min_pairs - 1))
    decision = decide([Pair(s, a, b) for s, a, b in events], gate, deadline_passed)
    assert decision.outcome == ("fail" if deadline_passed else "wait")
    assert decision.reason == (
        f"{'deadline: only' if deadline_passed else 'collecting:'} {len(events)} of "
        f"{gate.min_pairs} pairs"
    )
