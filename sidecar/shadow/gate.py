"""The shadow gate: is a candidate better than the champion on traffic it never saw, by enough,
and nowhere clearly worse?

Both versions were replayed on the same fresh events and judged the same way, so each event
gives one paired difference d = candidate - champion: pointwise scores in 0..1, or pairwise
verdicts turned into 1/0.5/0 against 0/0.5/1, so d is +1, 0 or -1. The gate reads only those.

- Fewer than `min_pairs` pairs: wait; once the deadline has passed, fail.
- Pass when the one-sided Wilcoxon signed-rank test says better at `alpha`, the mean difference
  is at least `min_effect`, and no segment with `segment_min_pairs` pairs has a mean difference
  below -`segment_delta`.
- Fail (a clear loss) when the test says worse at `alpha`, overall or within a regressed segment.
  A regressed segment whose own test is not significant only blocks passing: a few noisy pairs
  should not throw away a candidate that is better overall, nor let one that hurts a slice
  through. Segments are tested one by one, uncorrected; a segment must both regress beyond
  `segment_delta` and test worse before it rejects.
- Otherwise wait for more pairs; once the deadline has passed, fail with the shortfall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

EXACT_MAX_N = 25
"""Up to this many non-zero differences the null distribution is counted exactly."""

_DIGITS = 9
"""Differences are rounded so float noise (0.7 - 0.6 vs 0.8 - 0.7) neither splits a tie nor
turns an equal pair into a tiny win."""

Outcome = Literal["pass", "fail", "wait"]


@dataclass(frozen=True)
class Pair:
    """One event's paired result; `segment` is the event's `metadata.segment`, if any."""

    segment: str | None
    candidate: float
    champion: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.candidate <= 1.0 and 0.0 <= self.champion <= 1.0):
            raise ValueError(
                f"scores must be in 0..1, got candidate={self.candidate} champion={self.champion}"
            )

    @property
    def delta(self) -> float:
        return round(self.candidate - self.champion, _DIGITS)


class GateSettings(Protocol):
    """The settings the gate reads (sidecar.settings.Settings has them), without importing it."""

    @property
    def shadow_min_pairs(self) -> int: ...
    @property
    def shadow_alpha(self) -> float: ...
    @property
    def shadow_min_effect(self) -> float: ...
    @property
    def shadow_segment_delta(self) -> float: ...
    @property
    def shadow_segment_min_pairs(self) -> int: ...


@dataclass(frozen=True)
class GateRules:
    """The thresholds of one gate; see the module docstring for how each is used."""

    min_pairs: int
    alpha: float
    min_effect: float
    segment_delta: float
    segment_min_pairs: int

    def __post_init__(self) -> None:
        if self.min_pairs < 1 or self.segment_min_pairs < 1:
            raise ValueError("min_pairs and segment_min_pairs must be at least 1")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.min_effect < 0.0 or self.segment_delta < 0.0:
            raise ValueError("min_effect and segment_delta must not be negative")

    @classmethod
    def from_settings(cls, settings: GateSettings) -> GateRules:
        return cls(
            min_pairs=settings.shadow_min_pairs,
            alpha=settings.shadow_alpha,
            min_effect=settings.shadow_min_effect,
            segment_delta=settings.shadow_segment_delta,
            segment_min_pairs=settings.shadow_segment_min_pairs,
        )


@dataclass(frozen=True)
class SignedRank:
    """A Wilcoxon signed-rank test of paired differences: `n` non-zero ones, their rank sums,
    and the one-sided p-values for "candidate better" and "candidate worse"."""

    n: int
    w_plus: float
    w_minus: float
    p_better: float
    p_worse: float
    exact: bool


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided, a one-line reason for a person, and JSON-able figures."""

    outcome: Outcome
    reason: str
    figures: dict[str, object]


def signed_rank_test(deltas: Sequence[float]) -> SignedRank:
    """Wilcoxon's test with zero differences dropped (his original treatment: a tie says nothing
    about direction) and average ranks for tied |d|. The p-values come from counting all 2^n sign
    assignments when n <= EXACT_MAX_N (exact also with ties), else from the normal approximation
    with tie and continuity corrections. No non-zero difference: both p-values are 1."""
    nonzero = [d for d in (round(x, _DIGITS) for x in deltas) if d != 0.0]
    doubled, tie_sizes = _doubled_ranks([abs(d) for d in nonzero])
    w2_plus = sum(r for r, d in zip(doubled, nonzero, strict=True) if d > 0)
    w2_minus = sum(doubled) - w2_plus
    n = len(nonzero)
    exact = n <= EXACT_MAX_N
    if n == 0:
        p_better, p_worse = 1.0, 1.0
    elif exact:
        p_better, p_worse = _exact_tails(doubled, w2_plus, w2_minus)
    else:
        p_better, p_worse = _normal_tails(doubled, tie_sizes, w2_plus, w2_minus)
    return SignedRank(n, w2_plus / 2, w2_minus / 2, p_better, p_worse, exact)


def _doubled_ranks(values: Sequence[float]) -> tuple[list[int], list[int]]:
    """Twice each value's average rank (a tie over positions i..j shares i + j, an integer, so
    exact counting stays in integers), in input order; and the size of every tie group."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0] * len(values)
    tie_sizes: list[int] = []
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = start + end + 2
        tie_sizes.append(end - start + 1)
        start = end + 1
    return ranks, tie_sizes


def _exact_tails(doubled: Sequence[int], w2_plus: int, w2_minus: int) -> tuple[float, float]:
    """P(W+ >= observed W+) and P(W- >= observed W-) under the null, where every sign is a coin
    flip; W+ and W- have the same null distribution, so one table of subset sums serves both."""
    counts = [1] + [0] * sum(doubled)
    reach = 0
    for rank in doubled:
        reach += rank
        for total in range(reach, rank - 1, -1):
            counts[total] += counts[total - rank]
    outcomes = 2 ** len(doubled)
    return sum(counts[w2_plus:]) / outcomes, sum(counts[w2_minus:]) / outcomes


def _normal_tails(
    doubled: Sequence[int], tie_sizes: Sequence[int], w2_plus: int, w2_minus: int
) -> tuple[float, float]:
    """W+ - E[W+] = (W+ - W-) / 2, from the doubled integer sums so that swapping the versions
    swaps the p-values exactly. The continuity correction is half the spacing of W+'s lattice
    (a quarter of the doubled ranks' gcd): 0.5 without ties, the sign test's own when every |d|
    ties (pairwise verdicts), where a fixed 0.5 would pass a candidate on too little. Lumpier
    ties (nearly every |d| equal but a few) hide a coarse lattice under a fine gcd: rougher."""
    n = len(doubled)
    variance = n * (n + 1) * (2 * n + 1) / 24 - sum(t**3 - t for t in tie_sizes) / 48
    sd = math.sqrt(variance)
    correction = math.gcd(*doubled) / 4
    z_better = ((w2_plus - w2_minus) / 4 - correction) / sd
    z_worse = ((w2_minus - w2_plus) / 4 - correction) / sd
    return 0.5 * math.erfc(z_better / math.sqrt(2.0)), 0.5 * math.erfc(z_worse / math.sqrt(2.0))


@dataclass(frozen=True)
class _Group:
    """The paired differences of some pairs: all of them, or one segment's."""

    n: int
    mean_delta: float
    wins: int
    losses: int
    test: SignedRank


def _group(deltas: Sequence[float]) -> _Group:
    return _Group(
        n=len(deltas),
        mean_delta=sum(deltas) / len(deltas) if deltas else 0.0,
        wins=sum(1 for d in deltas if d > 0),
        losses=sum(1 for d in deltas if d < 0),
        test=signed_rank_test(deltas),
    )


def decide(pairs: Sequence[Pair], rules: GateRules, deadline_passed: bool) -> GateDecision:
    """The gate's decision on the pairs collected so far (see the module docstring)."""
    overall = _group([pair.delta for pair in pairs])
    by_segment: dict[str, list[float]] = {}
    for pair in pairs:
        if pair.segment is not None:
            by_segment.setdefault(pair.segment, []).append(pair.delta)
    segments = {
        name: _group(deltas)
        for name, deltas in sorted(by_segment.items())
        if len(deltas) >= rules.segment_min_pairs
    }
    regressed = {n: g for n, g in segments.items() if g.mean_delta < -rules.segment_delta}
    outcome, reason = _verdict(overall, regressed, len(segments), rules, deadline_passed)
    count = len(pairs)
    figures: dict[str, object] = {
        "n": count,
        "shadow_mean": sum(p.candidate for p in pairs) / count if count else None,
        "champion_mean": sum(p.champion for p in pairs) / count if count else None,
        "mean_delta": overall.mean_delta if count else None,
        "wins": overall.wins,
        "losses": overall.losses,
        "ties": count - overall.wins - overall.losses,
        "p_value": overall.test.p_better,
        "p_worse": overall.test.p_worse,
        "method": "wilcoxon-exact" if overall.test.exact else "wilcoxon-normal",
        "segments": {n: {"n": g.n, "mean_delta": g.mean_delta} for n, g in segments.items()},
        "regressed": list(regressed),
        "decision": outcome,
        "reason": reason,
    }
    return GateDecision(outcome, reason, figures)


def _verdict(
    overall: _Group,
    regressed: dict[str, _Group],
    checked: int,
    rules: GateRules,
    deadline_passed: bool,
) -> tuple[Outcome, str]:
    if overall.n < rules.min_pairs:
        if deadline_passed:
            return "fail", f"deadline: only {overall.n} of {rules.min_pairs} pairs"
        return "wait", f"collecting: {overall.n} of {rules.min_pairs} pairs"
    if overall.test.p_worse < rules.alpha:
        return "fail", "rejected: worse than the champion: " + _summary(
            overall, overall.test.p_worse, rules.alpha
        )
    for name, group in regressed.items():
        if group.test.p_worse < rules.alpha:
            return "fail", f"rejected: segment {name!r} worse than the champion: " + _summary(
                group, group.test.p_worse, rules.alpha
            )
    better = overall.test.p_better < rules.alpha
    if better and overall.mean_delta >= rules.min_effect and not regressed:
        return "pass", (
            f"passed: {_summary(overall, overall.test.p_better, rules.alpha)}; "
            f"no segment regressed ({checked} with >= {rules.segment_min_pairs} pairs)"
        )
    shortfall = _shortfall(overall, regressed, rules)
    if deadline_passed:
        return "fail", f"deadline: {shortfall} after {overall.n} pairs"
    return "wait", f"collecting: {shortfall} on {overall.n} pairs"


def _summary(group: _Group, p: float, alpha: float) -> str:
    return (
        f"{group.mean_delta:+.3f} mean paired difference on {group.n} pairs "
        f"({group.wins} better, {group.losses} worse), Wilcoxon p={p:.2g} < alpha {alpha:g}"
    )


def _shortfall(overall: _Group, regressed: dict[str, _Group], rules: GateRules) -> str:
    """Why a candidate with enough pairs has not passed, worst reason first."""
    if regressed:
        name, group = min(regressed.items(), key=lambda item: item[1].mean_delta)
        more = f" and {len(regressed) - 1} more" if len(regressed) > 1 else ""
        return (
            f"segment {name!r} regressed ({group.mean_delta:+.3f} mean on {group.n} pairs, "
            f"p={group.test.p_worse:.2g}){more}"
        )
    if overall.test.p_better >= rules.alpha:
        return f"inconclusive (p={overall.test.p_better:.2g}, alpha {rules.alpha:g})"
    return (
        f"mean difference {overall.mean_delta:+.3f} below the minimum effect {rules.min_effect:g}"
    )
