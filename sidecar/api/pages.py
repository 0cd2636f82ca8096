"""The admin page at `/`: server-rendered HTML over the store, readable without JavaScript.

Its forms decide through the same authenticated API as any client (`POST /v1/prompts/…`): a
small script sends them with the token a person entered once for this browser session (kept in
`sessionStorage`, never in the page's source, a cookie or a URL). Without JavaScript the forms
stay hidden, so nothing can post a token in a form."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import Engine

from sidecar.api.charts import (
    Judged,
    LineageNode,
    lineage_svg,
    trend_points,
    trend_svg,
)
from sidecar.api.models import clipped
from sidecar.api.prompts import Scores, require_database, versions_of
from sidecar.api.side_by_side import side_by_side
from sidecar.promote.lifecycle import REJECTABLE, UNGATED, Status
from sidecar.store.admin_reads import feedback_samples, live_scores, versions_in
from sidecar.store.candidates import status_counts
from sidecar.store.database import aware
from sidecar.store.judgments import active_versions
from sidecar.store.tables import Candidate

STATIC = Path(__file__).parent / "static"
TREND_DAYS = 7
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=PackageLoader("sidecar.api", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def page_routes(engine: Engine | None, scores: Scores | None) -> APIRouter:
    """The HTML pages over `engine` (None: they answer 503 like the API)."""
    router = APIRouter(include_in_schema=False)

    def means(name: str) -> dict[int, tuple[float, int]]:
        return scores(name) if scores is not None else {}

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        database = require_database(engine)
        counts = status_counts(database)
        active = active_versions(database)
        since = datetime.now(UTC) - timedelta(days=TREND_DAYS)
        prompts = []
        for name in sorted({name for name, _ in counts}):
            waiting = versions_in(database, name, Status.AWAITING_APPROVAL)
            prompts.append(
                {
                    "name": name,
                    "active": active.get(name),
                    "awaiting": waiting,
                    "counts": {s: counts.get((name, s), 0) for s in Status},
                    "trend": _trend(database, name, since),
                }
            )
        return render(request, "overview.html", prompts=prompts, days=TREND_DAYS)

    @router.get("/ui/prompts/{name}", response_class=HTMLResponse)
    def prompt_page(request: Request, name: str) -> HTMLResponse:
        database = require_database(engine)
        try:
            found = versions_of(database, name)
        except HTTPException as missing:
            return not_found_page(request, str(missing.detail))
        scored = means(name)
        active = next((v for v, c in found.items() if c.status == Status.ACTIVE), None)
        since = datetime.now(UTC) - timedelta(days=TREND_DAYS)
        nodes = {
            version: LineageNode(
                version,
                tuple(c.parents),
                c.status,
                scored[version][0] if version in scored else None,
                c.mutation_summary,
                bool(c.flags),
            )
            for version, c in found.items()
        }

        def link(version: int) -> str:
            return str(request.url_for("version_page", name=name, version=str(version)))

        by_status = {
            status: [_row(c, scored) for _, c in sorted(found.items()) if c.status == status]
            for status in Status
        }
        return render(
            request,
            "prompt.html",
            name=name,
            active=active,
            by_status={s: rows for s, rows in by_status.items() if rows},
            trend=_trend(database, name, since),
            lineage=Markup(lineage_svg(nodes, link, active)),  # built with every text escaped
            rollback_to=[v for v, c in sorted(found.items()) if c.status == Status.RETIRED],
            days=TREND_DAYS,
        )

    @router.get("/ui/prompts/{name}/versions/{version}", response_class=HTMLResponse)
    def version_page(request: Request, name: str, version: int) -> HTMLResponse:
        database = require_database(engine)
        try:
            found = versions_of(database, name)
        except HTTPException as missing:
            return not_found_page(request, str(missing.detail))
        if version not in found:
            return not_found_page(request, f"{clipped(name)} has no version {version}")
        candidate = found[version]
        scored = means(name)
        active = next((c for c in found.values() if c.status == Status.ACTIVE), None)
        base = active if active is not None and active.version != version else None
        if base is None and candidate.parents and candidate.parents[0] in found:
            base = found[candidate.parents[0]]
        worst, best = feedback_samples(database, name, version)
        evidence = dict(candidate.evidence or {})
        return render(
            request,
            "candidate.html",
            name=name,
            candidate=_row(candidate, scored),
            components=_diffs(base, candidate),
            base=base.version if base is not None else None,
            base_is_active=base is not None and base is active,
            shadow=evidence.pop("shadow", None),
            other_evidence=evidence,
            worst=worst,
            best=best,
            can_approve=candidate.status in REJECTABLE,
            needs_force=candidate.status in UNGATED,
            can_reject=candidate.status in REJECTABLE,
        )

    return router


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates.get_template(template).render(
        home=str(request.url_for("overview")),
        static=str(request.url_for("static", path="")),
        prompt_url=lambda name: str(request.url_for("prompt_page", name=name)),
        version_url=lambda name, version: str(
            request.url_for("version_page", name=name, version=str(version))
        ),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def not_found_page(request: Request, detail: str) -> HTMLResponse:
    """A 404 for a person: the one-line reason and a way back."""
    return render(request, "not_found.html", status=404, detail=detail)


def _trend(engine: Engine, name: str, since: datetime) -> Markup:
    judged = [Judged(at, score, version) for at, score, version in live_scores(engine, name, since)]
    title = f"{name}: live judge score over the last {TREND_DAYS} days"
    return Markup(trend_svg(trend_points(judged), title))  # built with every text escaped


def _row(candidate: Candidate, scored: Mapping[int, tuple[float, int]]) -> dict[str, Any]:
    score = scored.get(candidate.version)
    return {
        "version": candidate.version,
        "status": candidate.status,
        "parents": list(candidate.parents),
        "flags": list(candidate.flags),
        "summary": candidate.mutation_summary,
        "score": score[0] if score else None,
        "evaluations": score[1] if score else 0,
        "created": aware(candidate.created_at).strftime("%Y-%m-%d %H:%M UTC"),
        "approved_by": candidate.approved_by,
        "origin_run": candidate.origin_run_id,
    }


def _diffs(base: Candidate | None, candidate: Candidate) -> list[dict[str, Any]]:
    names = sorted(set(candidate.components) | set(base.components if base else {}))
    shown = []
    for component in names:
        before = base.components.get(component, "") if base is not None else ""
        after = candidate.components.get(component, "")
        shown.append(
            {"name": component, "changed": before != after, "rows": side_by_side(before, after)}
        )
    return shown
