"""Read routes: the managed prompts, their versions and candidates (from the store), and the
document this replica serves (from memory, so the serving app keeps its prompt, and its 304s,
while the database is down)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response
from sqlalchemy import Engine

from sidecar.api.models import (
    INVALID,
    NO_DATABASE,
    NOT_FOUND,
    CandidateView,
    ErrorBody,
    PromptSummary,
    clipped,
    quoted,
)
from sidecar.events import PromptDocument
from sidecar.optimize.lineage import candidate_view
from sidecar.promote.lifecycle import Status
from sidecar.promote.served import ServedDocuments
from sidecar.store.candidates import candidates_of, status_counts
from sidecar.store.judgments import active_versions
from sidecar.store.tables import Candidate

Scores = Callable[[str], dict[int, tuple[float, int]]]
"""Prompt name -> version -> (mean score, evaluations) under the configured evaluation key."""

READ = {**NOT_FOUND, **NO_DATABASE, **INVALID}


def require_database(engine: Engine | None) -> Engine:
    if engine is None:
        raise HTTPException(503, "this server has no database")
    return engine


def versions_of(engine: Engine | None, name: str) -> dict[int, Candidate]:
    """Every version of a prompt; 404 when the store knows no prompt of that name (a name with
    a NUL character is none: PostgreSQL refuses it in a query, so it is never asked). The
    404 repeats at most 80 characters of the name."""
    database = require_database(engine)
    found = {} if "\x00" in name else candidates_of(database, name)
    if not found:
        raise HTTPException(404, f"no prompt named {quoted(name)}")
    return found


def require_version(engine: Engine | None, name: str, version: int) -> Candidate:
    found = versions_of(engine, name)
    if version not in found:
        raise HTTPException(404, f"{clipped(name)} has no version {version}")
    return found[version]


def etag_matches(if_none_match: str, sha256: str) -> bool:
    """If-None-Match's weak comparison (RFC 9110): `*`, or any listed tag whose opaque value is
    the document's sha256, weak (`W/"…"`) or strong, quoted or (tolerated) bare."""
    for tag in if_none_match.split(","):
        value = tag.strip().removeprefix("W/").strip('"')
        if value in ("*", sha256):
            return True
    return False


def active_response(document: PromptDocument, if_none_match: str | None) -> Response:
    """The document with its strong ETag (its sha256); 304 without a body when the caller holds
    it. `no-cache`: a cache may keep it, but must ask again before each use."""
    headers = {"ETag": f'"{document.sha256}"', "Cache-Control": "no-cache"}
    if if_none_match is not None and etag_matches(if_none_match, document.sha256):
        return Response(status_code=304, headers=headers)
    return Response(document.model_dump_json(), media_type="application/json", headers=headers)


def prompt_routes(
    engine: Engine | None, served: ServedDocuments | None, scores: Scores | None
) -> APIRouter:
    """The read routes over `engine` (None: they answer 503), `served` and `scores` (None:
    candidates carry no mean score)."""
    router = APIRouter(prefix="/v1/prompts", tags=["prompts"])

    def views(name: str, candidates: list[Candidate]) -> list[CandidateView]:
        means = scores(name) if scores is not None else {}
        return [
            CandidateView.model_validate(candidate_view(candidate, means.get(candidate.version)))
            for candidate in sorted(candidates, key=lambda candidate: candidate.version)
        ]

    @router.get("", responses=NO_DATABASE)
    def list_prompts() -> list[PromptSummary]:
        """Every managed prompt: its active version and its versions counted by status."""
        database = require_database(engine)
        counts = status_counts(database)
        active = active_versions(database)
        names = sorted({name for name, _ in counts})
        return [
            PromptSummary(
                name=name,
                active_version=active.get(name),
                counts={status: counts.get((name, status), 0) for status in Status},
            )
            for name in names
        ]

    @router.get(
        "/{name}/active",
        response_model=PromptDocument,
        responses={
            304: {"description": "The caller's If-None-Match holds this document's ETag."},
            404: {"model": ErrorBody, "description": "This replica serves nothing for `name`."},
            **INVALID,
        },
    )
    def active(name: str, if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """The PromptDocument this replica serves for `name`; ETag = its sha256."""
        document = served.get(name) if served is not None else None
        if document is None:
            raise HTTPException(
                404,
                f"nothing is served for {quoted(name)} here: not published to this replica (yet)",
            )
        return active_response(document, if_none_match)

    @router.get("/{name}/versions", responses=READ)
    def versions(name: str) -> list[CandidateView]:
        """Every version of the prompt, oldest first."""
        return views(name, list(versions_of(engine, name).values()))

    @router.get("/{name}/versions/{version}", responses=READ)
    def version_of(name: str, version: int) -> CandidateView:
        """One version: components, parents, flags, evidence, mean score."""
        return views(name, [require_version(engine, name, version)])[0]

    @router.get("/{name}/candidates", responses=READ)
    def candidates(name: str, status: Status | None = None) -> list[CandidateView]:
        """The prompt's versions, only those in `status` when given."""
        found = versions_of(engine, name).values()
        return views(name, [c for c in found if status is None or c.status == status])

    return router
