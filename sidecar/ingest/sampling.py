"""Deterministic sampling: the same event id is kept or dropped the same way by every replica,
on every redelivery, so a restart never changes which events were judged."""

from __future__ import annotations

import hashlib

_SCALE = float(2**64)


def sample_point(event_id: str) -> float:
    """Where an event id falls in [0, 1): the first 8 bytes of its sha256, as a fraction."""
    digest = hashlib.sha256(event_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def is_sampled(event_id: str, rate: float) -> bool:
    """Keep the event when its point is below the rate: 1.0 keeps all, 0.0 keeps none."""
    return sample_point(event_id) < rate
