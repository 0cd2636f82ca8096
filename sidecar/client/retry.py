"""How long a source waits before asking again after failures: soon after one, less and less
often through a long outage, never so rarely that a recovered source goes unnoticed for long."""

from __future__ import annotations

MAX_RETRY_DELAY_S = 10.0


def retry_delay(interval_s: float, failures: int) -> float:
    """After `failures` failures in a row: the interval doubled each time, capped at
    MAX_RETRY_DELAY_S (or at the interval, when that is longer)."""
    if failures <= 0:
        return interval_s
    return min(interval_s * 2.0 ** min(failures, 30), max(MAX_RETRY_DELAY_S, interval_s))
