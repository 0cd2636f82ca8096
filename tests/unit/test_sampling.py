"""Deterministic sampling by hash of event id."""

from __future__ import annotations

import hashlib
import itertools
import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.ingest.sampling import is_sampled, point_of_digest, sample_point


def ids(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


IDS = ids(20_000)
rates = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def test_sample_point_is_top_53_bits_of_sha256() -> None:
    event_id = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
    digest = hashlib.sha256(event_id.encode()).digest()
    assert sample_point(event_id) == (int.from_bytes(digest[:8], "big") >> 11) / 2**53


def test_sample_point_is_deterministic() -> None:
    assert [sample_point(i) for i in IDS[:500]] == [sample_point(i) for i in IDS[:500]]
    assert all(is_sampled(i, 0.5) == is_sampled(i, 0.5) for i in IDS[:500])


def test_sample_points_differ_between_ids() -> None:
    points = {sample_point(i) for i in IDS[:1000]}
    assert len(points) == 1000


@settings(database=None, max_examples=300, deadline=None)
@given(st.text())
def test_sample_point_is_in_unit_interval(event_id: str) -> None:
    point = sample_point(event_id)
    assert 0.0 <= point < 1.0


def test_rate_one_keeps_all() -> None:
    assert all(is_sampled(i, 1.0) for i in IDS)


def test_rate_zero_keeps_none() -> None:
    assert not any(is_sampled(i, 0.0) for i in IDS)


def test_point_below_one_even_for_the_largest_digest() -> None:
    # A digest starting with 0xff..ff must still fall in [0, 1) so that rate 1.0 keeps it.
    assert point_of_digest(b"\xff" * 32) < 1.0


def test_smallest_digest_maps_to_zero() -> None:
    assert point_of_digest(b"\x00" * 32) == 0.0


@settings(database=None, max_examples=300, deadline=None)
@given(st.uuids(), rates, rates)
def test_monotone_in_rate(event_id: uuid.UUID, a: float, b: float) -> None:
    low, high = sorted((a, b))
    if is_sampled(str(event_id), low):
        assert is_sampled(str(event_id), high)


def test_kept_sets_are_nested() -> None:
    kept = [{i for i in IDS if is_sampled(i, rate)} for rate in (0.1, 0.3, 0.5, 0.9)]
    for smaller, larger in itertools.pairwise(kept):
        assert smaller <= larger
        assert len(smaller) < len(larger)


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.9])
def test_kept_fraction_matches_rate(rate: float) -> None:
    fraction = sum(is_sampled(i, rate) for i in IDS) / len(IDS)
    assert rate - 0.02 <= fraction <= rate + 0.02
