"""What to change and on what: the component to rewrite (round-robin, so every module of a
multi-module prompt gets its turn), and the minibatch to learn from (epoch-shuffled, so every
feedback instance is seen before any is seen twice)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence


def next_component(components: Sequence[str], proposals_so_far: int) -> str:
    """The component whose turn it is, given how many proposals were made from this parent."""
    if not components:
        raise ValueError("a candidate needs at least one component")
    ordered = sorted(components)
    return ordered[proposals_so_far % len(ordered)]


class MinibatchSampler:
    """Consecutive slices of a shuffled order; a new shuffle each time the order is used up."""

    def __init__(self, instances: Sequence[int], size: int, rng: random.Random) -> None:
        if size < 1:
            raise ValueError("minibatch size must be at least 1")
        self._instances = list(dict.fromkeys(instances))
        self._size = min(size, len(self._instances))
        self._rng = rng
        self._order: list[int] = []

    def next(self) -> list[int]:
        """The next minibatch: `size` distinct instances (fewer only if fewer exist)."""
        if not self._instances:
            return []
        batch: list[int] = []
        while len(batch) < self._size:
            if not self._order:
                self._order = self._instances[:]
                self._rng.shuffle(self._order)
            candidate = self._order.pop()
            if candidate not in batch:
                batch.append(candidate)
        return batch


def split_instances(
    instances: Sequence[tuple[int, str | None]], pareto_fraction: float
) -> tuple[list[int], list[int]]:
    """(feedback set, Pareto set), each segment split in the same proportion, so a segment that
    is 10% of traffic is 10% of both. Every segment with two or more instances has one in each.
    Which side an event lands on follows from its id alone, so two runs over the same events
    score the champion on the same Pareto set (and a sliding window keeps most of it)."""
    if not 0.0 < pareto_fraction < 1.0:
        raise ValueError("pareto_fraction must be strictly between 0 and 1")
    by_segment: dict[str, list[int]] = {}
    for instance, segment in instances:
        by_segment.setdefault(segment or "", []).append(instance)
    feedback: list[int] = []
    pareto: list[int] = []
    for segment in sorted(by_segment):
        members = sorted(set(by_segment[segment]), key=_hashed)
        cut = round(len(members) * pareto_fraction)
        if len(members) >= 2:
            cut = min(max(cut, 1), len(members) - 1)
        pareto.extend(members[:cut])
        feedback.extend(members[cut:])
    return sorted(feedback), sorted(pareto)


def _hashed(instance: int) -> bytes:
    return hashlib.sha256(str(instance).encode()).digest()


PARETO_SHARE = 20
"""A Pareto set holds at most 1/PARETO_SHARE of a run's metric calls, so a run can afford to
score about that many candidates on it. With a noisy judge, more iterations on fewer events
beat fewer iterations on more (bench/optimize_parity.py: 1/10 reached 0.86 of the optimum at
300 calls, 1/20 reached 0.98); a proposal still needs the whole set and a paired margin, and
the shadow gate measures on fresh traffic."""


def pareto_fraction(configured: float, window: int, max_metric_calls: int) -> float:
    """The share of the window to compare candidates on: the configured fraction, but never more
    events than 1/PARETO_SHARE of the budget (and at least two, where the window has more).
    Events it leaves out go to the feedback set, to learn from."""
    affordable = max(2, max_metric_calls // PARETO_SHARE)
    if window <= 2 or affordable >= configured * window:
        return configured
    return min(configured, max(affordable / window, 1 / window))
