"""Whether a child earns its place: it must beat its parent on the same minibatch, by more than
`margin` in total score, before anything is spent scoring it on the Pareto set. A margin above
zero guards against keeping a child whose only edge is judge noise."""

from __future__ import annotations

from collections.abc import Mapping


def accept(parent: Mapping[int, float], child: Mapping[int, float], margin: float = 0.0) -> bool:
    """True when the child's total on the parent's minibatch exceeds the parent's by `margin`.

    Both must be scored on the same instances; a missing one is a programming error.
    """
    if set(parent) != set(child):
        raise ValueError("parent and child must be scored on the same minibatch")
    if not parent:
        return False
    return sum(child.values()) > sum(parent.values()) + margin
