"""The per-instance Pareto frontier (Agrawal et al., GEPA, section 3).

For every instance (a stored event in the Pareto set) the front is the set of candidates whose
score is within `epsilon` of the best score on it: judge noise makes a 0.81 and a 0.80 a tie,
not a win. A candidate in some instance's front is a contender. Contenders are then pruned,
weakest mean first: one whose every won instance is also won by another contender still kept is
dominated (a strict subset of another's wins, or a clone of a stronger candidate, or wins that
several others jointly cover). Parents are drawn with weight = instances won, so a candidate
best on many instances is tried often while niche specialists survive, and clones do not skew
the draw. Merge looks at all contenders: two equally good edits are what it combines.

An instance counts by its event's weight (`weights.py`): where ingest kept a rare segment
whole and a common one at 5%, winning a common-segment instance counts for more, as it stands
for more traffic. With equal rates every instance counts 1, as in the paper.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from sidecar.optimize.weights import Weights, total_weight, weighted_mean

Scores = Mapping[int, Mapping[int, float]]
"""candidate id → instance id (an event row) → score in 0..1."""


@dataclass(frozen=True)
class Frontier:
    """Who wins what: `fronts[i]` are the kept candidates tied best on instance i; `wins[c]`
    the instances a kept (non-dominated) candidate wins; `contenders` every candidate tied best
    somewhere before pruning; `weights` what each instance counts for (1.0 when not listed)."""

    fronts: dict[int, frozenset[int]]
    wins: dict[int, frozenset[int]]
    contenders: frozenset[int] = frozenset()
    weights: Weights = field(default_factory=dict)

    @property
    def candidates(self) -> list[int]:
        """The non-dominated candidates, most (weighted) instances won first, then lowest id."""
        return sorted(self.wins, key=lambda c: (-self.weight(c), c))

    def weight(self, candidate: int) -> float:
        """The weight of the instances the candidate wins: their count when all weigh 1."""
        return total_weight(sorted(self.wins.get(candidate, frozenset())), self.weights)


def mean_score(scores: Mapping[int, float], weights: Weights | None = None) -> float:
    """A candidate's mean over the instances it was scored on, each by its weight."""
    return weighted_mean(scores, weights)


def fronts(scores: Scores, epsilon: float = 0.0) -> dict[int, frozenset[int]]:
    """Per instance, the candidates within `epsilon` of its best score. Instances nobody was
    scored on have no front; a candidate not scored on an instance is not in its front."""
    best: dict[int, float] = {}
    for per_instance in scores.values():
        for instance, score in per_instance.items():
            if instance not in best or score > best[instance]:
                best[instance] = score
    result: dict[int, set[int]] = {instance: set() for instance in best}
    for candidate, per_instance in scores.items():
        for instance, score in per_instance.items():
            if score >= best[instance] - epsilon:
                result[instance].add(candidate)
    return {instance: frozenset(members) for instance, members in result.items()}


def pareto_frontier(
    scores: Scores, epsilon: float = 0.0, weights: Weights | None = None
) -> Frontier:
    """The frontier with dominated candidates pruned, weakest (weighted) mean, then newest,
    first: a candidate goes when every instance it wins is also won by another one still kept."""
    by_instance = fronts(scores, epsilon)
    won: dict[int, set[int]] = {}
    for instance, members in by_instance.items():
        for candidate in members:
            won.setdefault(candidate, set()).add(instance)
    kept = set(won)
    for candidate in sorted(won, key=lambda c: (mean_score(scores[c], weights), -c)):
        covered = all(
            any(other != candidate and other in kept for other in by_instance[instance])
            for instance in won[candidate]
        )
        if covered:
            kept.discard(candidate)
    pruned = {
        instance: frozenset(c for c in members if c in kept)
        for instance, members in by_instance.items()
    }
    return Frontier(
        fronts=pruned,
        wins={c: frozenset(won[c]) for c in kept},
        contenders=frozenset(won),
        weights=dict(weights or {}),
    )


def sample_parent(frontier: Frontier, rng: random.Random) -> int:
    """A frontier candidate drawn with probability proportional to the (weighted) instances it
    wins."""
    candidates = frontier.candidates
    if not candidates:
        raise ValueError("the frontier is empty: score the seed on the Pareto set first")
    weights = [frontier.weight(candidate) for candidate in candidates]
    return rng.choices(candidates, weights=weights, k=1)[0]
