"""The prompts API on a real uvicorn server (port 0) reached with httpx, over a real SQLite file
and PostgreSQL: a person's decisions behind the admin token (refused without it, and then nothing
changes), and the versions and candidates the store holds. The served document and the OpenAPI
contract are in test_http.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from sidecar.promote.lifecycle import Status
from sidecar.store.candidates import insert_candidate
from sidecar.store.database import create_database_engine
from sidecar.store.outbox import pending_outbox
from sidecar.store.promotions import audit_trail
from sidecar.store.repository import seed_prompt
from tests.integration.test_http import serving
from tests.versions import NAME, TARGETS, add_version, approved, snapshot, statuses

TOKEN = "an-admin-token-Ω-of-some-length"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
BASE = f"/v1/prompts/{NAME}"


def bearer(token: str = TOKEN) -> dict[bytes, bytes]:
    """The header as a client sends it: the token's UTF-8 bytes (httpx sends str as ASCII)."""
    return {b"Authorization": ("Bearer " + token).encode()}


@dataclass
class Api:
    client: httpx.Client
    engine: Engine
    means: dict[int, tuple[float, int]] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)

    def post(self, path: str, body: Any, token: str = TOKEN) -> httpx.Response:
        return self.client.post(BASE + path, json=body, headers=bearer(token))


@pytest.fixture
def engine(database_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    engine = migrated_engine(database_url)
    seed_prompt(engine, NAME, {"system_prompt": "You help customers."}, NOW)
    return engine


@pytest.fixture
def api(engine: Engine) -> Iterator[Api]:
    means: dict[int, tuple[float, int]] = {}
    decisions: list[str] = []
    options: dict[str, Any] = {
        "admin_token": SecretStr(TOKEN),
        "publish_targets": TARGETS,
        "scores": lambda name: dict(means) if name == NAME else {},
        "on_decision": lambda: decisions.append("decided"),
    }
    with serving(engine, **options) as client:
        yield Api(client, engine, means, decisions)


def decidable(engine: Engine) -> int:
    """v1 retired, v2 active, v3 awaiting approval: every decision below would succeed."""
    approved(engine, add_version(engine, "awaiting_approval"), by="bob")
    return add_version(engine, "awaiting_approval")


MUTATIONS = {
    "approve": ("/candidates/3/approve", {"by": "alice", "note": "ok"}),
    "reject": ("/candidates/3/reject", {"by": "alice", "reason": "no"}),
    "rollback": ("/rollback", {"by": "alice", "to": 1}),
}

UNAUTHORIZED: dict[str, dict[bytes, bytes]] = {
    "missing": {},
    "wrong": bearer("not-the-token"),
    "prefix": bearer(TOKEN[:-1]),
    "basic scheme": {b"Authorization": b"Basic " + TOKEN.encode()},
    "no scheme": {b"Authorization": TOKEN.encode()},
    "empty bearer": {b"Authorization": b"Bearer"},
}


# --- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("credentials", sorted(UNAUTHORIZED))
def test_a_mutating_call_without_the_token_is_401_and_changes_nothing(
    api: Api, mutation: str, credentials: str
) -> None:
    assert decidable(api.engine) == 3
    before = snapshot(api.engine)
    path, body = MUTATIONS[mutation]
    response = api.client.post(BASE + path, json=body, headers=UNAUTHORIZED[credentials])
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "SIDECAR_ADMIN_TOKEN" in response.json()["detail"]
    assert snapshot(api.engine) == before
    assert api.decisions == []


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("configured", [None, SecretStr("")], ids=["unset", "empty"])
def test_with_no_token_configured_every_mutating_call_is_403_and_changes_nothing(
    engine: Engine, mutation: str, configured: SecretStr | None
) -> None:
    decidable(engine)
    before = snapshot(engine)
    path, body = MUTATIONS[mutation]
    with serving(engine, admin_token=configured, publish_targets=TARGETS) as client:
        for credentials in ("missing", "empty bearer"):
            response = client.post(BASE + path, json=body, headers=UNAUTHORIZED[credentials])
            assert response.status_code == 403
        response = client.post(BASE + path, json=body, headers=bearer())
        assert response.status_code == 403
        assert response.json() == {
            "detail": "mutating calls are off: no SIDECAR_ADMIN_TOKEN is configured"
        }
    assert snapshot(engine) == before


def test_the_token_is_checked_before_the_body(api: Api) -> None:
    """Even a body that is not JSON (which FastAPI refuses before any dependency runs)."""
    path = f"{BASE}/candidates/1/reject"
    json_type = {b"Content-Type": b"application/json"}
    for body in (b'{"by": "alice"}', b"not json {"):
        refused = api.client.post(path, content=body, headers=json_type)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        invalid = api.client.post(path, content=body, headers={**json_type, **bearer()})
        assert invalid.status_code == 422
    assert api.post("/candidates/1/reject", {"by": "alice"}).json() == {
        "detail": "body.reason: Field required"
    }
    broken = api.client.post(path, content=b"{", headers={**json_type, **bearer()})
    assert broken.json() == {"detail": "body.1: JSON decode error"}


def test_the_token_never_shows_in_logs_or_answers(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    v2 = add_version(api.engine, "awaiting_approval")
    answers = [
        api.post(f"/candidates/{v2}/approve", {"by": "alice"}),
        api.post(f"/candidates/{v2}/approve", {"by": "alice"}, token=TOKEN + "x"),
        api.client.post(f"{BASE}/rollback", content="{", headers=bearer(TOKEN + "x")),
    ]
    assert [answer.status_code for answer in answers] == [200, 401, 401]
    assert "approved by alice over HTTP" in caplog.text
    for text in [caplog.text, *(answer.text for answer in answers)]:
        assert TOKEN not in text and TOKEN.encode().decode("latin-1") not in text


# --- decisions --------------------------------------------------------------------------------


def test_approve_activates_queues_every_target_and_wakes_the_publisher(api: Api) -> None:
    v2 = add_version(api.engine, "awaiting_approval")
    response = api.post(f"/candidates/{v2}/approve", {"by": "alice", "note": "wins on billing"})
    assert response.status_code == 200
    result = response.json()
    assert result == {
        "prompt": NAME,
        "version": v2,
        "status": "active",
        "action": "approve",
        "activation_id": result["activation_id"],
        "targets": list(TARGETS),
        "previous_version": 1,
    }
    assert statuses(api.engine) == {1: "retired", v2: "active"}
    outbox = pending_outbox(api.engine)
    assert [(i.target, i.activation_id, i.version) for i in outbox] == [
        (target, result["activation_id"], v2) for target in TARGETS
    ]
    assert outbox[0].document["approved_by"] == "alice"
    [activated] = [a for a in audit_trail(api.engine, NAME, v2) if a.to_status == "active"]
    assert (activated.id, activated.actor, activated.reason) == (
        result["activation_id"],
        "alice",
        "wins on billing",
    )
    assert api.decisions == ["decided"]


def test_approving_an_ungated_version_needs_force_and_is_audited_as_forced(api: Api) -> None:
    v2 = add_version(api.engine, "proposed")
    before = snapshot(api.engine)
    refused = api.post(f"/candidates/{v2}/approve", {"by": "alice"})
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"v{v2} is proposed and has not passed the shadow gate: approving it anyway needs force "
        '(--force, or "force": true over HTTP) and is audited as forced'
    )
    assert snapshot(api.engine) == before and api.decisions == []

    forced = api.post(f"/candidates/{v2}/approve", {"by": "alice", "force": True})
    assert forced.status_code == 200
    assert (forced.json()["action"], forced.json()["status"]) == ("force_approve", "active")
    approval = [a for a in audit_trail(api.engine, NAME, v2) if a.to_status == "approved"]
    assert [(a.action, a.from_status, a.actor) for a in approval] == [
        ("force_approve", "proposed", "alice")
    ]
    shown = api.client.get(f"{BASE}/versions/{v2}").json()
    assert shown["evidence"]["forced"] is True and shown["status"] == "active"
    assert api.decisions == ["decided"]


def test_reject_needs_a_reason_and_only_a_version_not_yet_approved(api: Api) -> None:
    v2 = add_version(api.engine, "shadow")
    for body, detail in [
        ({"by": "alice"}, "body.reason: Field required"),
        ({"by": "alice", "reason": "   "}, "body.reason: String should have at least 1 character"),
        ({"by": " ", "reason": "worse"}, "body.by: String should have at least 1 character"),
        ({"by": "alice", "reason": "x", "force": True}, "body.force: Extra inputs"),
    ]:
        refused = api.post(f"/candidates/{v2}/reject", body)
        assert refused.status_code == 422
        assert refused.json()["detail"].startswith(detail)
    assert statuses(api.engine)[v2] == "shadow"

    rejected = api.post(f"/candidates/{v2}/reject", {"by": "alice", "reason": "rude to users"})
    assert rejected.status_code == 200
    assert rejected.json() == {
        "prompt": NAME,
        "version": v2,
        "status": "rejected",
        "action": "reject",
        "activation_id": None,
        "targets": [],
        "previous_version": None,
    }
    last = audit_trail(api.engine, NAME, v2)[-1]
    assert (last.action, last.actor, last.reason) == ("reject", "alice", "rude to users")
    assert pending_outbox(api.engine) == []

    active = api.post("/candidates/1/reject", {"by": "alice", "reason": "old"})
    assert active.status_code == 409
    assert "roll back" in active.json()["detail"]
    assert api.decisions == ["decided"]


def test_rollback_to_the_previous_version_or_the_one_named(api: Api) -> None:
    nothing = api.post("/rollback", {"by": "alice"})
    assert nothing.status_code == 409
    assert nothing.json() == {"detail": f"{NAME} has no earlier version to roll back to"}
    v2, v3 = add_version(api.engine, "awaiting_approval"), add_version(api.engine, "shadow")
    assert api.post(f"/candidates/{v2}/approve", {"by": "alice"}).status_code == 200
    assert api.post(f"/candidates/{v3}/approve", {"by": "alice", "force": True}).status_code == 200

    back = api.post("/rollback", {"by": "bob", "reason": "complaints"})
    assert back.status_code == 200
    assert (back.json()["version"], back.json()["previous_version"]) == (v2, v3)
    assert back.json()["action"] == "rollback"
    assert statuses(api.engine) == {1: "retired", v2: "active", v3: "retired"}
    queued = [
        i for i in pending_outbox(api.engine) if i.activation_id == back.json()["activation_id"]
    ]
    assert [(i.target, i.version) for i in queued] == [(target, v2) for target in TARGETS]

    named = api.post("/rollback", {"by": "bob", "to": 1})
    assert named.status_code == 200
    assert (named.json()["version"], named.json()["previous_version"]) == (1, v2)
    assert statuses(api.engine) == {1: "active", v2: "retired", v3: "retired"}

    pooled = add_version(api.engine, "pool")
    never_active = api.post("/rollback", {"by": "bob", "to": pooled})
    assert never_active.status_code == 409
    assert "never active" in never_active.json()["detail"]
    assert api.post("/rollback", {"by": "bob", "to": 0}).status_code == 422
    assert api.decisions == ["decided"] * 4


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/v1/prompts/nope/candidates/2/approve", {"by": "a"}, "no prompt named 'nope'"),
        (f"{BASE}/candidates/9/approve", {"by": "a"}, f"{NAME} has no version 9"),
        (f"{BASE}/candidates/9/reject", {"by": "a", "reason": "r"}, f"{NAME} has no version 9"),
        ("/v1/prompts/nope/rollback", {"by": "a"}, "no prompt named 'nope'"),
        (f"{BASE}/rollback", {"by": "a", "to": 9}, f"{NAME} has no version 9"),
    ],
)
def test_unknown_prompts_and_versions_are_404(
    api: Api, path: str, body: dict[str, Any], detail: str
) -> None:
    before = snapshot(api.engine)
    response = api.client.post(path, json=body, headers=bearer())
    assert (response.status_code, response.json()) == (404, {"detail": detail})
    assert snapshot(api.engine) == before and api.decisions == []


# --- reads ------------------------------------------------------------------------------------


def test_prompts_are_listed_with_their_active_version_and_counts(api: Api) -> None:
    decidable(api.engine)
    add_version(api.engine, "pool")
    [listed] = api.client.get("/v1/prompts").json()
    assert listed["name"] == NAME and listed["active_version"] == 2
    assert listed["counts"] == {
        **{status.value: 0 for status in Status},
        "retired": 1,
        "active": 1,
        "awaiting_approval": 1,
        "pool": 1,
    }


def test_candidates_carry_flags_and_the_scores_callable_s_mean(api: Api) -> None:
    flag = "copies user text into system_prompt: 'my account number is 99812-771 and my mother'"
    v2 = insert_candidate(
        api.engine, NAME, {"system_prompt": "Help more."}, [1], None, "x", [flag], NOW
    ).version
    api.means.update({1: (0.612345678, 12), v2: (0.75, 40)})
    listed = api.client.get(f"{BASE}/candidates").json()
    assert [(c["version"], c["status"]) for c in listed] == [(1, "active"), (v2, "pool")]
    assert [(c["mean_score"], c["evaluations"]) for c in listed] == [(0.6123, 12), (0.75, 40)]
    assert api.client.get(f"{BASE}/versions").json() == listed
    pooled = api.client.get(f"{BASE}/candidates", params={"status": "pool"}).json()
    assert [c["version"] for c in pooled] == [v2]
    shown = api.client.get(f"{BASE}/versions/{v2}").json()
    assert shown == listed[1]
    assert (shown["flags"], shown["parents"], shown["mutation_summary"]) == ([flag], [1], "x")
    assert datetime.fromisoformat(shown["created_at"]) == NOW

    api.means.clear()
    unscored = api.client.get(f"{BASE}/versions/1").json()
    assert (unscored["mean_score"], unscored["evaluations"]) == (None, 0)


def test_a_server_without_scores_gives_no_mean(engine: Engine) -> None:
    with serving(engine) as client:
        [seed] = client.get(f"{BASE}/candidates").json()
    assert (seed["version"], seed["mean_score"]) == (1, None)


def test_bad_reads_say_what_was_wrong(api: Api) -> None:
    bogus = api.client.get(f"{BASE}/candidates", params={"status": "bogus"})
    assert bogus.status_code == 422
    detail = bogus.json()["detail"]
    assert detail.startswith("query.status: Input should be")
    assert all(f"'{status.value}'" in detail for status in Status)
    for path, reason in [
        (f"{BASE}/versions/9", f"{NAME} has no version 9"),
        ("/v1/prompts/nope/versions", "no prompt named 'nope'"),
        ("/v1/prompts/nope/candidates", "no prompt named 'nope'"),
    ]:
        missing = api.client.get(path)
        assert (missing.status_code, missing.json()) == (404, {"detail": reason})
    assert api.client.get(f"{BASE}/versions/two").status_code == 422


def test_without_a_working_database_store_routes_are_503(tmp_path: Path) -> None:
    unmigrated = create_database_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        for engine, reason in [(None, "this server has no database"), (unmigrated, "database")]:
            with serving(engine, admin_token=SecretStr(TOKEN)) as client:
                for answer in [
                    client.get("/v1/prompts"),
                    client.get(f"{BASE}/candidates"),
                    client.post(f"{BASE}/rollback", json={"by": "a"}, headers=bearer()),
                ]:
                    assert answer.status_code == 503
                    assert reason in answer.json()["detail"]
                assert client.get("/healthz").status_code == 200
    finally:
        unmigrated.dispose()


def test_errors_repeat_at_most_80_characters_of_what_the_caller_sent(api: Api) -> None:
    name = "n" * 60_000  # httpx refuses URLs over 64 KiB
    cut = "n" * 79 + "…"
    for path, detail in [
        (f"/v1/prompts/{name}/versions", f"no prompt named '{cut}'"),
        (f"/v1/prompts/{name}/versions/1", f"no prompt named '{cut}'"),
        (f"/v1/prompts/{name}/candidates", f"no prompt named '{cut}'"),
        (
            f"/v1/prompts/{name}/active",
            f"nothing is served for '{cut}' here: not published to this replica (yet)",
        ),
    ]:
        response = api.client.get(path)
        assert (response.status_code, response.json()) == (404, {"detail": detail})
    page = api.client.get(f"/ui/prompts/{name}")
    assert page.status_code == 404
    assert cut in page.text and "n" * 81 not in page.text
    extra = api.post("/candidates/1/approve", {"by": "alice", name: "x"})
    assert extra.status_code == 422
    assert extra.json()["detail"] == f"body.{cut}: Extra inputs are not permitted"
