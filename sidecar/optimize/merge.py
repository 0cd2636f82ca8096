"""Merge (GEPA's system-aware crossover): two frontier candidates that descend from a common
ancestor and improved *different* components are combined, each component taken from the side
that changed it. Candidates that changed the same component conflict and are not merged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def ancestors(candidate: int, parents: Mapping[int, Sequence[int]]) -> dict[int, int]:
    """Every ancestor of `candidate` (itself included) with its distance in generations."""
    distance = {candidate: 0}
    frontier = [candidate]
    while frontier:
        following: list[int] = []
        for node in frontier:
            for parent in parents.get(node, ()):
                if parent not in distance:
                    distance[parent] = distance[node] + 1
                    following.append(parent)
        frontier = following
    return distance


def common_ancestor(a: int, b: int, parents: Mapping[int, Sequence[int]]) -> int | None:
    """The nearest ancestor shared by `a` and `b` (fewest generations in total), if any."""
    from_a = ancestors(a, parents)
    from_b = ancestors(b, parents)
    shared = set(from_a) & set(from_b)
    if not shared:
        return None
    return min(shared, key=lambda node: (from_a[node] + from_b[node], -node))


def merged_components(
    ancestor: Mapping[str, str], a: Mapping[str, str], b: Mapping[str, str]
) -> dict[str, str] | None:
    """The combination, or None when it would not be new: a conflict (both changed the same
    component differently), or one side holding every change (the merge equals a or b)."""
    if set(ancestor) != set(a) or set(ancestor) != set(b):
        return None
    merged: dict[str, str] = {}
    for name, original in ancestor.items():
        changed_a = a[name] != original
        changed_b = b[name] != original
        if changed_a and changed_b and a[name] != b[name]:
            return None
        merged[name] = a[name] if changed_a else b[name]
    if merged in (dict(a), dict(b)):
        return None
    return merged
