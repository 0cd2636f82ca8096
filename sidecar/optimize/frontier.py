"""The per-instance Pareto frontier (Agrawal et al., GEPA, section 3).

For every instance (a stored event in the Pareto set) the front is the set of candidates whose
score is within `epsilon` of the best score on it: judge noise makes a 0.81 and a 0.80 a tie,
not a win. A candidate is on the frontier if it is in some instance's front; among those, one
whose set of won instances is a strict subset of another's is dominated and pruned (an equal set
is kept: two different edits that are equally good are what merge combines). Parents are then
drawn with weight = instances won, so a candidate that is best on many instances is tried often
while niche specialists survive.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

Scores = Mapping[int, Mapping[int, float]]
"""candidate id → instance id (an event row) → score in 0..1."""


@dataclass(frozen=True)
class Frontier:
    """Who wins what: `fronts[i]` are the candidates tied best on instance i; `wins[c]` the
    instances a kept (non-dominated) candidate wins."""

    fronts: dict[int, frozenset[int]]
    wins: dict[int, frozenset[int]]

    @property
    def candidates(self) -> list[int]:
        """The non-dominated candidates, most instances won first (then lowest id)."""
        return sorted(self.wins, key=lambda c: (-len(self.wins[c]), c))

    def weight(self, candidate: int) -> int:
        return len(self.wins.get(candidate, frozenset()))


def mean_score(scores: Mapping[int, float]) -> float:
    return sum(scores.values()) / len(scores) if scores else 0.0


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


def pareto_frontier(scores: Scores, epsilon: float = 0.0) -> Frontier:
    """The frontier with dominated candidates pruned. Candidates that win exactly the same
    instances are all kept: equally good by different edits, they are what merge combines."""
    by_instance = fronts(scores, epsilon)
    won: dict[int, set[int]] = {}
    for instance, members in by_instance.items():
        for candidate in members:
            won.setdefault(candidate, set()).add(instance)

    kept: dict[int, frozenset[int]] = {}
    for candidate, instances in won.items():
        dominated = any(
            other != candidate and instances < other_instances
            for other, other_instances in won.items()
        )
        if not dominated:
            kept[candidate] = frozenset(instances)
    pruned = {
        instance: frozenset(c for c in members if c in kept)
        for instance, members in by_instance.items()
    }
    return Frontier(fronts=pruned, wins=kept)


def sample_parent(frontier: Frontier, rng: random.Random) -> int:
    """A frontier candidate drawn with probability proportional to the instances it wins."""
    candidates = frontier.candidates
    if not candidates:
        raise ValueError("the frontier is empty: score the seed on the Pareto set first")
    weights = [frontier.weight(candidate) for candidate in candidates]
    return rng.choices(candidates, weights=weights, k=1)[0]
