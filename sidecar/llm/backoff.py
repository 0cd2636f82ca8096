"""How long to wait before asking a provider again: exponential, capped, with full jitter.

Full jitter (a uniform draw below the exponential ceiling) spreads the retries of many
concurrent callers that failed together, so they do not hit a recovering provider at once.
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to sleep before retry number `attempt` (0 for the first retry)."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 32)))
    return rng.uniform(0.0, ceiling)


def retry_after_s(headers: object) -> float | None:
    """A provider's `Retry-After` in seconds, when it sent one as a number."""
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter("retry-after")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None
