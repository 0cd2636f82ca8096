"""The FastAPI application. It reaches the running sidecar only through what `create_api` is
given (its probes, the metrics registry, the database engine, the served documents, callbacks),
so `run` and a test serve it alike.

`/docs` is FastAPI's Swagger UI, whose page loads its JavaScript and CSS from a public CDN
(jsdelivr); where the browser cannot reach it, `/openapi.json` holds the same contract."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr
from sqlalchemy import Engine

from sidecar import __version__
from sidecar.api.auth import AdminGuard
from sidecar.api.decisions import decision_routes
from sidecar.api.models import HealthBody, Liveness, ReadinessBody, clipped
from sidecar.api.pages import STATIC, page_routes
from sidecar.api.prompts import Scores, prompt_routes
from sidecar.errors import StoreError
from sidecar.promote.served import ServedDocuments


class Probes(Protocol):
    """What `/readyz` and `/healthz` ask the running sidecar.

    As a native sidecar its readiness gates the chatbot's whole pod, so `readiness()` names only
    what the chatbot needs (its prompt published); `liveness()` fails only for what a restart
    mends (a dead worker), so that the kubelet restarts this container alone."""

    def readiness(self) -> dict[str, bool]: ...

    def liveness(self) -> Liveness: ...


def create_api(
    probes: Probes,
    registry: CollectorRegistry,
    engine: Engine | None = None,
    *,
    served: ServedDocuments | None = None,
    admin_token: SecretStr | None = None,
    publish_targets: Sequence[str] = (),
    scores: Scores | None = None,
    on_decision: Callable[[], None] | None = None,
) -> FastAPI:
    """The API over these parts. Without `engine` the store's routes answer 503; without
    `admin_token` mutating calls are refused (403); activations owe `publish_targets`; `scores`
    gives candidates their mean scores; `on_decision` runs after each committed decision."""
    api = FastAPI(title="gepa-sidecar", version=__version__, docs_url="/docs", redoc_url=None)
    guard = AdminGuard(admin_token)
    api.include_router(prompt_routes(engine, served, scores))
    api.include_router(decision_routes(engine, guard, publish_targets, on_decision))
    api.include_router(page_routes(engine, scores))
    api.mount("/ui/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(api, guard)

    @api.get(
        "/healthz",
        tags=["service"],
        response_model=HealthBody,
        responses={503: {"model": HealthBody, "description": "A worker died."}},
    )
    def healthz() -> JSONResponse:
        """Alive: every worker runs (Kubernetes restarts the container when this fails); the
        detail says how the dependencies are doing, and an outage there never fails it."""
        live = probes.liveness()
        ok = all(live.checks.values())
        body = HealthBody(status="ok" if ok else "failing", checks=live.checks, detail=live.detail)
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)

    @api.get(
        "/readyz",
        tags=["service"],
        response_model=ReadinessBody,
        responses={503: {"model": ReadinessBody, "description": "A check fails."}},
    )
    def readyz() -> JSONResponse:
        """Ready: the HTTP server serves and the active prompts are published (or none is yet);
        an outage of the database, the broker or the models never fails it."""
        checks = probes.readiness()
        ready = all(checks.values())
        body = ReadinessBody(status="ready" if ready else "not ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @api.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api


def validation_detail(error: RequestValidationError) -> str:
    """Every field's complaint, in one line: `body.reason: Field required`. A location names
    at most 80 characters of each part (an unknown body field is named by the caller)."""
    parts = []
    for problem in error.errors():
        where = ".".join(clipped(str(part)) for part in problem["loc"])
        parts.append(f"{where}: {' '.join(str(problem['msg']).split())}")
    return "; ".join(parts) or "invalid request"


def _add_error_handlers(api: FastAPI, guard: AdminGuard) -> None:
    """One-line `{"detail": ...}` bodies for a malformed request and for a failing database."""

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # A body that is not JSON at all is refused before any dependency runs; every POST is a
        # decision, and an unauthorized caller learns nothing about its body.
        refused = guard.refusal(request.headers.get("authorization"))
        if request.method == "POST" and refused is not None:
            return JSONResponse(
                {"detail": refused.detail}, refused.status_code, headers=refused.headers
            )
        return JSONResponse({"detail": validation_detail(error)}, 422)

    @api.exception_handler(StoreError)
    async def store_failed(request: Request, error: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, 503)
