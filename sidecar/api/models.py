"""The bodies the HTTP API reads and writes, as pydantic models, so `/openapi.json` documents each
one and a malformed request is refused before anything is decided."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from sidecar.promote.lifecycle import Action, Status


def storable(text: str) -> str:
    """Refuse a NUL character: no text column of PostgreSQL can hold one (a 422, not a 503)."""
    if "\x00" in text:
        raise ValueError("contains a NUL character, which the store cannot hold")
    return text


Person = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(storable),
]
"""Who decides: a name, never blank (the audit row's `actor`)."""

Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
    AfterValidator(storable),
]
"""Why, in a person's words (the audit row's `reason`): never blank when given."""


QUOTED_CHARS = 80
"""The most of a caller's own text (a path segment, a field name) an error message repeats."""


def clipped(text: str) -> str:
    """A caller's text as an error message repeats it: at most QUOTED_CHARS characters, cut
    with an ellipsis, so a 100 KB path is never echoed back."""
    if len(text) <= QUOTED_CHARS:
        return text
    return text[: QUOTED_CHARS - 1] + "…"


def quoted(text: str) -> str:
    """`clipped(text)` in quotes (its repr, so a control character cannot break the line)."""
    return repr(clipped(text))


class ErrorBody(BaseModel):
    """Every 4xx and 503 answer: one line that says what was wrong."""

    detail: str


Responses = dict[int | str, dict[str, Any]]
"""Extra answers a route documents in OpenAPI (FastAPI's `responses=`)."""

NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No such prompt or version."}}
NO_DATABASE: Responses = {
    503: {"model": ErrorBody, "description": "This server has no database, or it is failing."}
}
INVALID: Responses = {
    422: {"model": ErrorBody, "description": "A malformed path, query or body; names the field."}
}


class Liveness(BaseModel):
    """What the running sidecar says about itself: `checks` names each worker and whether it is
    alive (all must be), `detail` how its dependencies are doing (never a failure)."""

    checks: dict[str, bool]
    detail: dict[str, Any] = Field(default_factory=dict)


class HealthBody(BaseModel):
    """`status` is "ok", or "failing" when a worker died (a restart mends it); `checks` names
    each worker and whether it is alive; `detail` says how the database, the consumer, the judge
    and the published prompt are doing: an outage shows there, never as a failure."""

    status: str
    checks: dict[str, bool]
    detail: dict[str, Any]


class ReadinessBody(BaseModel):
    """`status` is "ready" or "not ready"; `checks` names each check and whether it passes."""

    status: str
    checks: dict[str, bool]


class PromptSummary(BaseModel):
    """A managed prompt: its active version and how many versions stand in each status."""

    name: str
    active_version: int | None
    counts: dict[Status, int]


class CandidateView(BaseModel):
    """One version, with the fields and scores `gepa-sidecar show --json` prints."""

    name: str
    version: int
    status: Status
    components: dict[str, str]
    parents: list[int]
    flags: list[str] = Field(description="Why a person should look twice (e.g. copied user text).")
    evidence: dict[str, Any] | None
    mutation_summary: str | None
    origin_run_id: int | None
    sha256: str
    created_at: datetime
    approved_by: str | None
    mean_score: float | None = Field(
        description="Mean replayed score under the configured task path and judge; null when "
        "unscored (or when this server was given no scores)."
    )
    evaluations: int


class ApproveRequest(BaseModel):
    """Approve a version: it becomes active and every publish target is owed it. `force` is
    needed for a version that has not passed the shadow gate (audited as forced)."""

    model_config = ConfigDict(extra="forbid")

    by: Person
    note: Reason | None = None
    force: bool = False


class RejectRequest(BaseModel):
    """Reject a version not yet approved; a rejected version never breeds again."""

    model_config = ConfigDict(extra="forbid")

    by: Person
    reason: Reason


class RollbackRequest(BaseModel):
    """Make an earlier (retired) version active again; without `to`, the one active last."""

    model_config = ConfigDict(extra="forbid")

    to: Annotated[int, Field(ge=1)] | None = None
    by: Person
    reason: Reason | None = None


class DecisionResult(BaseModel):
    """What a decision did: the version's new status, and for an activation (approve or
    rollback) its id, the targets it was queued for and the version it replaced."""

    prompt: str
    version: int
    status: Status
    action: Action
    activation_id: int | None = None
    targets: list[str] = Field(default_factory=list)
    previous_version: int | None = None
