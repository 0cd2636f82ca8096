"""The FastAPI application. It reaches the running sidecar only through `Readiness`, the
metrics registry and the database engine it is given, so it can be served by `run` or by a
test alike."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine

from sidecar.optimize.lineage import candidate_view
from sidecar.store.candidates import candidates_of


class Readiness(Protocol):
    """What `/readyz` asks: each named check and whether it passes now."""

    def readiness(self) -> dict[str, bool]: ...


def create_api(
    readiness: Readiness, registry: CollectorRegistry, engine: Engine | None = None
) -> FastAPI:
    api = FastAPI(title="gepa-sidecar", docs_url=None, redoc_url=None)
    api.state.readiness = readiness
    api.state.registry = registry
    api.state.engine = engine

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        """Alive: the process serves HTTP. Kubernetes restarts the pod when this fails."""
        return {"status": "ok"}

    @api.get("/readyz")
    def readyz() -> JSONResponse:
        """Ready: the database answers, the consumer loop runs, the judge worker is alive."""
        checks = api.state.readiness.readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @api.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(api.state.registry), media_type=CONTENT_TYPE_LATEST)

    def versions_of(name: str) -> dict[int, Any]:
        if api.state.engine is None:
            raise HTTPException(503, "no database")
        found = candidates_of(api.state.engine, name)
        if not found:
            raise HTTPException(404, f"no prompt named {name!r}")
        return found

    @api.get("/v1/prompts/{name}/candidates")
    def candidates(name: str, status: str | None = None) -> list[dict[str, Any]]:
        """Versions (with flags and evidence), optionally of one lifecycle status."""
        return [
            candidate_view(candidate)
            for _, candidate in sorted(versions_of(name).items())
            if status is None or candidate.status == status
        ]

    @api.get("/v1/prompts/{name}/versions/{version}")
    def version_of(name: str, version: int) -> dict[str, Any]:
        found = versions_of(name)
        if version not in found:
            raise HTTPException(404, f"{name} has no version {version}")
        return candidate_view(found[version])

    return api
