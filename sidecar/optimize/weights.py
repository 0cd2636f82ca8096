"""Weighing stored events as the traffic they stand for.

Ingest may keep every event of a rare segment and 5% of a common one (`sampling` in
CONFIG_FILE); each stored event records its rate, and stands for 1/rate events of traffic. A
mean over stored events that counted each once would then be mostly the rare segment. So every
mean the optimizer compares candidates by is weighted by 1/rate, made relative to the heaviest
event: equal rates give every event the weight 1.0 exactly, and the means are then, to the
last bit, the plain means they were before rates existed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from sidecar.ingest.sampling import event_weight

K = TypeVar("K", bound=Hashable)

Weights = Mapping[int, float]
"""Event row id → its relative weight in (0, 1]; an event not listed weighs 1.0."""


def relative_weights(rates: Mapping[K, float | None]) -> dict[K, float]:
    """Each event's 1/rate divided by the largest: 1.0 for the events kept at the lowest rate
    (and for every event when all rates are equal), less for oversampled ones."""
    raw = {key: event_weight(rate) for key, rate in rates.items()}
    heaviest = max(raw.values(), default=1.0)
    return {key: weight / heaviest for key, weight in raw.items()}


def weight_of(weights: Mapping[K, float] | None, key: K) -> float:
    return 1.0 if weights is None else weights.get(key, 1.0)


def weighted_total(values: Mapping[K, float], weights: Mapping[K, float] | None = None) -> float:
    """sum(weight * value), in the order of `values`."""
    return sum(weight_of(weights, key) * value for key, value in values.items())


def total_weight(keys: Iterable[K], weights: Mapping[K, float] | None = None) -> float:
    return sum(weight_of(weights, key) for key in keys)


def weighted_mean(values: Mapping[K, float], weights: Mapping[K, float] | None = None) -> float:
    """sum(weight * value) / sum(weight); 0.0 for no values."""
    if not values:
        return 0.0
    return weighted_total(values, weights) / total_weight(values, weights)
