"""Whether a child earns its place: it must beat its parent on the same minibatch, by more than
`margin` in total score, before anything is spent scoring it on the Pareto set. A margin above
zero guards against keeping a child whose only edge is judge noise.

Each instance's score counts by its event's weight (`weights.py`), so a gain on oversampled
traffic counts for what it stands for; the margin is scaled by the minibatch's mean weight, so
it stays a margin on the total of `len(minibatch)` events. Equal weights: the plain totals."""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.optimize.weights import Weights, total_weight, weighted_total


def accept(
    parent: Mapping[int, float],
    child: Mapping[int, float],
    margin: float = 0.0,
    weights: Weights | None = None,
) -> bool:
    """True when the child's weighted total on the parent's minibatch exceeds the parent's by
    `margin` (times the minibatch's mean weight).

    Both must be scored on the same instances; a missing one is a programming error.
    """
    if set(parent) != set(child):
        raise ValueError("parent and child must be scored on the same minibatch")
    if not parent:
        return False
    scaled = margin * (total_weight(parent, weights) / len(parent))
    return weighted_total(child, weights) > weighted_total(parent, weights) + scaled
