"""Deterministic sampling: the same event id is kept or dropped the same way by every replica,
on every redelivery, so a restart never changes which events were judged.

The rate an event is kept at is its prompt's rate for its `metadata.segment` when CONFIG_FILE
lists that segment, else the prompt's own rate, else SAMPLE_RATE: a rare segment can be kept
whole beside 5% of a common one. Every replica builds the same rules from the same settings and
file, and each event meets one point (its id's hash), so they still agree. An event stores the
rate it was kept at, so that averages over stored events can weigh it as 1/rate events of
traffic (`event_weight`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

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


def event_weight(rate: float | None) -> float:
    """How many events of traffic one stored event stands for: 1/rate. None (stored before
    rates were recorded) counts as kept at 1. A stored event cannot have been kept at 0."""
    if rate is None:
        return 1.0
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"a stored event's sample rate must be in (0, 1], got {rate!r}")
    return 1.0 / rate


def _check_rate(rate: float, where: str) -> float:
    if math.isnan(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"{where}: a sample rate must be in 0..1, got {rate!r}")
    return rate


@dataclass(frozen=True, slots=True)
class PromptRates:
    """One prompt's rates: `rate` for its events (None: the default) and one per segment."""

    rate: float | None = None
    segments: Mapping[str, float] = field(default_factory=dict)


class SamplingSpec(Protocol):
    """CONFIG_FILE's `sampling` block (settings.SamplingBlock), read without importing it."""

    @property
    def rate(self) -> float | None: ...
    @property
    def segments(self) -> Mapping[str, float]: ...


class SampledPrompt(Protocol):
    """A CONFIG_FILE prompt (settings.PromptSpec) as far as sampling reads it."""

    @property
    def name(self) -> str: ...
    @property
    def sampling(self) -> SamplingSpec | None: ...


@dataclass(frozen=True, slots=True)
class SamplingRules:
    """Every rate ingest applies: `default` (SAMPLE_RATE) and the prompts CONFIG_FILE gives
    rates to. Plain data, so it crosses to the ingest writer process by pickling."""

    default: float
    prompts: Mapping[str, PromptRates] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_rate(self.default, "default")
        for name, rates in self.prompts.items():
            if rates.rate is not None:
                _check_rate(rates.rate, name)
            for segment, rate in rates.segments.items():
                _check_rate(rate, f"{name}, segment {segment!r}")

    @classmethod
    def of(cls, default: float, prompts: Iterable[SampledPrompt]) -> SamplingRules:
        """The rules of SAMPLE_RATE and the CONFIG_FILE prompts that have a `sampling` block."""
        return cls(
            default,
            {
                prompt.name: PromptRates(prompt.sampling.rate, dict(prompt.sampling.segments))
                for prompt in prompts
                if prompt.sampling is not None
            },
        )

    def rate(self, prompt: str, segment: str | None) -> float:
        """The prompt's rate for the segment if listed, else the prompt's rate, else default."""
        rates = self.prompts.get(prompt)
        if rates is None:
            return self.default
        if segment is not None and segment in rates.segments:
            return rates.segments[segment]
        return self.default if rates.rate is None else rates.rate
