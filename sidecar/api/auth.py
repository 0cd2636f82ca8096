"""Who may change what the chatbot runs over HTTP: a caller holding SIDECAR_ADMIN_TOKEN.

Reads are open (they show what a replica serves); every mutating call needs `Authorization:
Bearer <token>`, compared in constant time. With no token configured, mutating calls are off
rather than open: a forgotten setting must never let anyone approve a prompt. The token is never
logged, echoed or put in an error."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

CHALLENGE = {"WWW-Authenticate": "Bearer"}
NO_TOKEN = "mutating calls are off: no SIDECAR_ADMIN_TOKEN is configured"
MISSING = "mutating calls need the header 'Authorization: Bearer <SIDECAR_ADMIN_TOKEN>'"
WRONG = "the bearer token is not SIDECAR_ADMIN_TOKEN"

BEARER = HTTPBearer(
    auto_error=False, description="SIDECAR_ADMIN_TOKEN, needed by every mutating call."
)
"""Declares the scheme in the OpenAPI schema (Swagger UI's Authorize button); the check itself
is `AdminGuard.refusal`, which also answers for requests refused before routing's dependencies."""


def bearer_credentials(authorization: str | None) -> str | None:
    """The credentials of a `Bearer` Authorization header (the scheme is case-insensitive);
    None when the header is missing, names another scheme or carries nothing."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


class AdminGuard:
    """The dependency of every mutating route; `refusal` says why a request may not mutate."""

    def __init__(self, token: SecretStr | None) -> None:
        self._token = token if token is not None and token.get_secret_value() else None

    def refusal(self, authorization: str | None) -> HTTPException | None:
        """403 when mutating is off, 401 (with a Bearer challenge) without the right token."""
        if self._token is None:
            return HTTPException(403, NO_TOKEN)
        presented = bearer_credentials(authorization)
        if presented is None:
            return HTTPException(401, MISSING, headers=CHALLENGE)
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes on the wire.
        expected = self._token.get_secret_value().encode("utf-8")
        if not hmac.compare_digest(presented.encode("latin-1"), expected):
            return HTTPException(401, WRONG, headers=CHALLENGE)
        return None

    def __call__(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    ) -> None:
        refused = self.refusal(request.headers.get("authorization"))
        if refused is not None:
            raise refused
