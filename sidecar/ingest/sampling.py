"""Deterministic sampling: the same event id is kept or dropped the same way by every replica,
on every redelivery, so a restart never changes which events were judged."""

from __future__ import annotations

import hashlib

_MANTISSA_BITS = 53
_SCALE = float(2**_MANTISSA_BITS)


def sample_point(event_id: str) -> float:
    """Where an event id falls in [0, 1), from its sha256."""
    return point_of_digest(hashlib.sha256(event_id.encode("utf-8")).digest())


def point_of_digest(digest: bytes) -> float:
    """The top 53 bits of a digest as a fraction: exact in a float, so never rounds up to 1.0."""
    return (int.from_bytes(digest[:8], "big") >> (64 - _MANTISSA_BITS)) / _SCALE


def is_sampled(event_id: str, rate: float) -> bool:
    """Keep the event when its point is below the rate: 1.0 keeps all, 0.0 keeps none."""
    return sample_point(event_id) < rate
