"""What `status` and `judge-eval` print for a person: a model's last error with when and why,
and words where a value is missing, never Python's `None` (nor a 0.000 nothing measured)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sidecar.cli.judging import _format_agreement
from sidecar.cli.service import _format_status

NOW = datetime(2026, 11, 29, 7, 43, 12, tzinfo=UTC)
NO_ERROR = {
    "kind": None,
    "last_error": None,
    "last_error_at": None,
    "first_error_at": None,
    "count": 0,
}
ZERO = {"cost_usd": 0.0, "calls": 0, "unpriced_calls": 0, "known": True}


def summary(**models: dict[str, Any]) -> dict[str, Any]:
    return {
        "events": {"accepted": 0, "judged": 0},
        "optimization": {"runs": 0, "metric_calls": 0, "cost_usd": 0.0},
        "spend": {p: {"last_hour": ZERO, "last_day": ZERO} for p in ("judge", "optimize")},
        "models": {role: models.get(role, NO_ERROR) for role in ("judge", "task", "reflection")},
        "prompts": {
            "customer-care": {"active_version": None, "published": {}, "pending_publishes": 0}
        },
    }


def test_status_shows_a_roles_last_error_when_and_why() -> None:
    judge = {
        "kind": "AuthenticationError",
        "last_error": "Missing credentials. " + "Please pass an `api_key`. " * 20,
        "last_error_at": "2026-11-29T07:40:12+00:00",
        "first_error_at": "2026-11-29T07:38:01+00:00",
        "count": 25,
    }
    lines = _format_status(summary(judge=judge), NOW).splitlines()
    [line] = [line for line in lines if line.startswith("model      judge")]
    assert line.startswith(
        "model      judge      last error 2026-11-29 07:40:12Z (3m ago; 25 failures since "
        "2026-11-29 07:38:01Z): AuthenticationError: Missing credentials. Please pass"
    )
    assert line.endswith(" …") and len(line) < 300
    assert "model      task       no errors" in lines
    assert "model      reflection no errors" in lines


def test_status_never_prints_none() -> None:
    text = _format_status(summary(), NOW)
    assert "None" not in text
    assert "customer-care  active_version=none  published: no approval yet" in text


def test_judge_eval_that_judged_nothing_prints_no_numbers_it_does_not_have() -> None:
    report = {
        "prompt": None,
        "judge_version": "openai/local#abc",
        "n": 0,
        "judge_errors": 4,
        "accuracy": 0.0,
        "kappa": None,
        "mean_abs_error": 0.0,
        "categories": [0.0, 1.0],
        "confusion": [[0, 0], [0, 0]],
    }
    text = _format_agreement(report)
    assert "None" not in text
    assert "0.000" not in text
    assert "accuracy   n/a (nothing judged)" in text
    assert "kappa      undefined" in text
    assert "prompt=none (the default rubric)" in text
