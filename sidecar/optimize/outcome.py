"""When a run's models, not its prompt, are why it can make nothing: a provider that refuses
every call (no credentials, a bad key, a 4xx) or that nobody can reach.

Such a run must say so and fail, not spend its iterations and report `finished` with the cause
buried in its mutation attempts. It stops early once a model that has not answered once in the
run has failed a few calls in a row (refused, or unreachable through every retry); and it fails
when it made no new version and the reflection model never answered, with the last model error
as its cause (an evaluation that failed leaves nothing to reflect on, so the reflection model is
never asked either).
"""

from __future__ import annotations

from sidecar.llm.failures import FailureLog

MODEL_ERROR = "model_error"
"""The stop reason of a run its models ended."""

FAILURES_TO_STOP = 3
"""Calls failed for good (after the gateway's retries) in a row before a run gives up: a
reflection asks twice, so this is two iterations of a dead reflection model."""

NOTHING_TO_LEARN = "perfect_on_pareto"
"""The stop reason of a run whose champion is already perfect on the Pareto set."""


def hopeless(failures: FailureLog, limit: int = FAILURES_TO_STOP) -> bool:
    """Asking more cannot help: some role has not answered once in this run, and its last
    `limit` calls failed for good (refused, or unreachable through every retry)."""
    return any(
        in_a_row >= limit and not failures.answered.get(role)
        for role, in_a_row in failures.failed_in_a_row.items()
    )


def run_failure(failures: FailureLog, new_versions: int, stop_reason: str | None) -> str | None:
    """Why a run failed because of its models, or None when it did not: it made no new version,
    the reflection model never answered, and a model call failed."""
    if new_versions or stop_reason == NOTHING_TO_LEARN or failures.last_error is None:
        return None
    if failures.answered.get("reflection"):
        return None  # the reflection model answered: what went wrong was its replies
    return f"no proposal could be made: {failures.last_error}"
