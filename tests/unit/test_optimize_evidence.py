"""When a frontier candidate is proposed: full Pareto coverage and a paired margin; and which
versions a warm pool takes back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sidecar.optimize.engine import warm_pool
from sidecar.optimize.evidence import paired_evidence, proposal_verdict, sign_test_p
from sidecar.store.tables import Candidate

PARETO = list(range(10))


def test_the_sign_test_is_exact() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(3, 0) == pytest.approx(1 / 8)
    assert sign_test_p(9, 1) == pytest.approx(11 / 1024)
    assert sign_test_p(0, 4) == 1.0


def test_a_clear_paired_gain_on_the_whole_set_is_proposed() -> None:
    champion = {e: 0.5 for e in PARETO}
    candidate = {e: 0.75 for e in PARETO}
    evidence = paired_evidence(candidate, champion, PARETO)
    assert (evidence.n, evidence.wins, evidence.losses, evidence.ties) == (10, 10, 0, 0)
    assert evidence.mean_delta == pytest.approx(0.25)
    assert evidence.p_value == pytest.approx(1 / 1024)
    propose, why = proposal_verdict(evidence, margin=0.02)
    assert propose and "all 10 Pareto events" in why


def test_a_higher_mean_on_a_few_shared_events_is_not_enough() -> None:
    champion = {e: 0.5 for e in PARETO}
    candidate = {0: 1.0, 1: 1.0, 2: 1.0}  # the budget ran out after three events
    evidence = paired_evidence(candidate, champion, PARETO)
    assert evidence.partial and evidence.n == 3
    assert evidence.as_dict()["partial"] is True
    propose, why = proposal_verdict(evidence, margin=0.0)
    assert not propose and why == "partial evidence: scored on 3 of 10 Pareto events"


def test_a_gain_within_the_margin_is_judge_noise() -> None:
    champion = {e: 0.5 for e in PARETO}
    candidate = {e: 0.5 + (0.03 if e % 2 else -0.01) for e in PARETO}
    evidence = paired_evidence(candidate, champion, PARETO, epsilon=0.02)
    assert evidence.ties == 5 and evidence.wins == 5
    assert not proposal_verdict(evidence, margin=0.02)[0]
    assert proposal_verdict(evidence, margin=0.005)[0]


def test_a_champion_left_unscored_lets_nothing_through() -> None:
    evidence = paired_evidence({e: 1.0 for e in PARETO}, {}, PARETO)
    assert proposal_verdict(evidence, margin=0.0) == (False, "not scored on the Pareto set")


def _version(version: int, status: str, flags: list[str], mean: float | None) -> Candidate:
    return Candidate(
        prompt_name="p",
        version=version,
        status=status,
        components={"system_prompt": f"text {version}"},
        sha256="0" * 64,
        flags=flags,
        evidence=None if mean is None else {"pareto_mean": mean},
        created_at=datetime.now(UTC),
    )


def test_a_warm_pool_never_takes_back_a_rejected_or_flagged_version() -> None:
    everyone = {
        1: _version(1, "active", [], None),
        2: _version(2, "rejected", [], 0.9),
        3: _version(3, "pool", ["instruction found only in traffic"], 0.95),
        4: _version(4, "proposed", [], 0.7),
        5: _version(5, "pool", [], 0.8),
        6: _version(6, "pool", [], 0.6),
    }
    assert warm_pool(everyone, [2, 3, 4, 5, 6, 99], champion=1, cap=2) == [1, 5, 4]
    assert warm_pool(everyone, [1, 5], champion=1, cap=0) == [1]
