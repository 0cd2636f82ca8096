"""The FastAPI application. It reaches the running sidecar only through `Readiness` and the
metrics registry it is given, so it can be served by `run` or by a test alike."""

from __future__ import annotations

from typing import Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class Readiness(Protocol):
    """What `/readyz` asks: each named check and whether it passes now."""

    def readiness(self) -> dict[str, bool]: ...


def create_api(readiness: Readiness, registry: CollectorRegistry) -> FastAPI:
    api = FastAPI(title="gepa-sidecar", docs_url=None, redoc_url=None)
    api.state.readiness = readiness
    api.state.registry = registry

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

    return api
