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

Weights. Ingest may keep a rare segment whole beside 5% of a common one; each pair then weighs
what its event stands for in traffic (1/its sample rate), in every mean and in the test, so an
oversampled segment neither carries nor sinks a candidate. The test stays a signed-rank
sign-flip test, on W+ = sum(w * rank) over the positive differences. Under its null (the two
versions interchangeable on every event) each sign is a fair coin whatever the weights, so
counting sign assignments, exactly up to EXACT_MAX_N or by the normal approximation, is valid
for any weights: the weights only aim the test at traffic's mixture instead of the sample's.
Its variance, sum((w * rank)^2) / 4, is where Kish's effective sample size
(sum w)^2 / sum(w^2) shows (reported as `n_effective`): unequal weights widen it as a smaller
sample would. Equal weights give Wilcoxon's test, and every figure, exactly as unweighted. A
weighted t-test with Kish's degrees of freedom would not: it would swap this test (chosen for
bounded scores and +1/0/-1 pairwise verdicts) for another whenever a rate differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from sidecar.shadow.signed_rank import (
    DIGITS,
    EXACT_MAX_N,
    SignedRank,
    relative_to_heaviest,
    signed_rank_test,
)

__all__ = [
    "EXACT_MAX_N",
    "GateDecision",
    "GateRules",
    "GateSettings",
    "Outcome",
    "Pair",
    "SignedRank",
    "decide",
    "effective_size",
    "signed_rank_test",
]

Outcome = Literal["pass", "fail", "wait"]


@dataclass(frozen=True)
class Pair:
    """One event's paired result; `segment` is the event's `metadata.segment`, if any, and
    `weight` the events of traffic it stands for (1/the rate ingest kept it at)."""

    segment: str | None
    candidate: float
    champion: float
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.candidate <= 1.0 and 0.0 <= self.champion <= 1.0):
            raise ValueError(
                f"scores must be in 0..1, got candidate={self.candidate} champion={self.champion}"
            )
        if not (math.isfinite(self.weight) and self.weight > 0.0):
            raise ValueError(f"a pair's weight must be positive and finite, got {self.weight}")

    @property
    def delta(self) -> float:
        return round(self.candidate - self.champion, DIGITS)


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
class GateDecision:
    """What the gate decided, a one-line reason for a person, and JSON-able figures."""

    outcome: Outcome
    reason: str
    figures: dict[str, object]


@dataclass(frozen=True)
class _Group:
    """The paired differences of some pairs: all of them, or one segment's."""

    n: int
    mean_delta: float
    wins: int
    losses: int
    test: SignedRank


def _group(pairs: Sequence[Pair]) -> _Group:
    deltas = [pair.delta for pair in pairs]
    weights = relative_to_heaviest([pair.weight for pair in pairs])
    return _Group(
        n=len(deltas),
        mean_delta=_mean(deltas, weights),
        wins=sum(1 for d in deltas if d > 0),
        losses=sum(1 for d in deltas if d < 0),
        test=signed_rank_test(deltas, weights),
    )


def _mean(values: Sequence[float], weights: Sequence[float]) -> float:
    """sum(w * value) / sum(w); with weights all 1.0, the plain mean to the last bit."""
    if not values:
        return 0.0
    return sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)


def effective_size(weights: Sequence[float]) -> float:
    """Kish's effective sample size (sum w)^2 / sum(w^2): n when all weights are equal."""
    relative = relative_to_heaviest(weights)
    return sum(relative) ** 2 / sum(w * w for w in relative) if relative else 0.0


def decide(pairs: Sequence[Pair], rules: GateRules, deadline_passed: bool) -> GateDecision:
    """The gate's decision on the pairs collected so far (see the module docstring)."""
    overall = _group(pairs)
    by_segment: dict[str, list[Pair]] = {}
    for pair in pairs:
        if pair.segment is not None:
            by_segment.setdefault(pair.segment, []).append(pair)
    segments = {
        name: _group(members)
        for name, members in sorted(by_segment.items())
        if len(members) >= rules.segment_min_pairs
    }
    regressed = {n: g for n, g in segments.items() if g.mean_delta < -rules.segment_delta}
    outcome, reason = _verdict(overall, regressed, len(segments), rules, deadline_passed)
    count = len(pairs)
    weights = relative_to_heaviest([p.weight for p in pairs])
    figures: dict[str, object] = {
        "n": count,
        "n_effective": round(effective_size(weights), 1),
        "shadow_mean": _mean([p.candidate for p in pairs], weights) if count else None,
        "champion_mean": _mean([p.champion for p in pairs], weights) if count else None,
        "mean_delta": overall.mean_delta if count else None,
        "wins": overall.wins,
        "losses": overall.losses,
        "ties": count - overall.wins - overall.losses,
        "p_value": overall.test.p_better,
        "p_worse": overall.test.p_worse,
        "method": ("weighted-" if any(w != 1.0 for w in weights) else "")
        + ("wilcoxon-exact" if overall.test.exact else "wilcoxon-normal"),
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
