"""R5a, R5b: the HTTP API on a real server (port 0) over a migrated store with a seeded prompt
and versions in every state. (a) every mutating route, listed from the app's own OpenAPI
document so a new one cannot be missed, is refused without the admin token (401) and with none
configured (403), and the store is unchanged; (b) schemathesis generates valid and invalid
requests for every operation of `/openapi.json`, on SQLite and PostgreSQL, and no answer is a
5xx (a NUL character, which PostgreSQL cannot store, is asked for explicitly: it was a 503)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from sqlalchemy import Engine

from sidecar.events import PromptDocument
from sidecar.promote.served import ServedDocuments
from sidecar.store.repository import seed_prompt
from tests.integration.test_http import serving
from tests.reliability.rows import Row, record, sized
from tests.versions import NAME, TARGETS, add_version, approved, snapshot

TOKEN = "r5-admin-token-of-some-length"
READS = frozenset({"get", "head", "options"})
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def staged(engine: Engine) -> int:
    """v1 retired, v2 active, v3 awaiting approval, v4 in the pool: every decision has a
    version it could act on. Returns the version awaiting approval."""
    seed_prompt(engine, NAME, {"system_prompt": "You help customers."}, NOW)
    approved(engine, add_version(engine, "awaiting_approval"), by="bob")
    waiting = add_version(engine, "awaiting_approval")
    add_version(engine, "pool")
    return waiting


@pytest.fixture
def engine(sqlite_url: str, migrated_engine: Callable[[str], Engine]) -> Engine:
    return migrated_engine(sqlite_url)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    body: dict[str, Any] | None


def example(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A minimal valid value of a JSON schema: the required properties, each the simplest value
    of its type (enough for the guard to be the only reason to refuse it)."""
    if "$ref" in schema:
        return example(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    if "anyOf" in schema:
        return example(schema["anyOf"][0], components)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: example(properties[key], components) for key in schema.get("required", [])}
    return {"string": "alice", "integer": 1, "number": 1.0, "boolean": False}.get(kind)


def mutating_operations(openapi: dict[str, Any], version: int) -> list[Operation]:
    """Every operation of the document that is not a read, with its path filled in."""
    components = openapi.get("components", {}).get("schemas", {})
    found = []
    for template, methods in openapi["paths"].items():
        path = template.replace("{name}", NAME).replace("{version}", str(version))
        for method, operation in methods.items():
            if method in READS:
                continue
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            body = example(schema, components) if schema is not None else None
            found.append(Operation(method.upper(), path, body))
    return found


UNAUTHORIZED: dict[str, dict[str, str]] = {
    "no token": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "another scheme": {"Authorization": "Basic " + TOKEN},
}


def call(client: httpx.Client, operation: Operation, headers: dict[str, str]) -> httpx.Response:
    return client.request(operation.method, operation.path, json=operation.body, headers=headers)


def test_r5a_every_mutating_route_needs_the_admin_token(engine: Engine) -> None:
    waiting = staged(engine)
    refused: Counter[int] = Counter()
    changed = 0
    with serving(engine, admin_token=SecretStr(TOKEN), publish_targets=TARGETS) as client:
        operations = mutating_operations(client.get("/openapi.json").json(), waiting)
        for operation in operations:
            for headers in UNAUTHORIZED.values():
                before = snapshot(engine)
                refused[call(client, operation, headers).status_code] += 1
                changed += snapshot(engine) != before
    with serving(engine, admin_token=None, publish_targets=TARGETS) as client:
        for operation in operations:
            before = snapshot(engine)
            answer = call(client, operation, {"Authorization": f"Bearer {TOKEN}"})
            refused[answer.status_code] += 1
            changed += snapshot(engine) != before
    # the control: the same calls with the token are not refused by the guard
    with serving(engine, admin_token=SecretStr(TOKEN), publish_targets=TARGETS) as client:
        allowed = Counter(
            call(client, operation, {"Authorization": f"Bearer {TOKEN}"}).status_code
            for operation in operations
        )
    routes = sorted(f"{operation.method} {operation.path}" for operation in operations)
    expected = Counter({401: len(operations) * len(UNAUTHORIZED), 403: len(operations)})
    passed = refused == expected and changed == 0 and not {401, 403} & set(allowed)
    record(
        Row(
            row="R5a",
            test="test_r5a_every_mutating_route_needs_the_admin_token",
            load=f"{len(operations)} mutating routes from /openapi.json x "
            f"{len(UNAUTHORIZED)} bad credentials, and with no token configured",
            faults="no token, wrong token, another scheme; SIDECAR_ADMIN_TOKEN unset",
            goal="401 without the token, 403 with none configured, store unchanged",
            result=f"answers {dict(sorted(refused.items()))}, {changed} store changes; with "
            f"the token {dict(sorted(allowed.items()))}",
            passed=passed,
            lost=0,
            duplicated=0,
        )
    )
    assert len(operations) >= 3, routes
    assert refused == expected, (routes, refused)
    assert changed == 0
    assert not {401, 403} & set(allowed), allowed


@dataclass
class Fuzzed:
    statuses: Counter[int]
    failures: list[str]


def fuzz(openapi_url: str, base_url: str, examples: int, found: Fuzzed) -> None:
    """`examples` generated requests per operation and mode (valid and invalid input; the
    prompt name once generated and once the seeded one), all with the admin token; the answers
    are counted in `found`."""
    schema = schemathesis.openapi.from_url(openapi_url)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {"name": NAME} if "{name}" in operation.path else None
        strategies = [
            operation.as_strategy(mode, path_parameters=fixed)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for fixed in (None, names)
        ]

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = case.call(base_url=base_url, headers=auth, timeout=30)
            found.statuses[response.status_code] += 1
            if response.status_code >= 500:
                found.failures.append(
                    f"{case.method} {case.formatted_path} {response.status_code}: "
                    f"{response.text[:200]}"
                )

        run()


@contextmanager
def fuzzed_server(engine: Engine) -> Iterator[httpx.Client]:
    """The API over `engine` staged with versions in every state, serving a document."""
    served = ServedDocuments()
    document = PromptDocument.build(
        name=NAME, version=2, components={"system_prompt": "Help."}, created_at=NOW
    )
    served.publish(document, 1)
    options = {"admin_token": SecretStr(TOKEN), "publish_targets": TARGETS, "served": served}
    with serving(engine, **options) as client:
        yield client


NUL_ANSWERS = [422, 422, 401, 422, 404]


def nul_answers(client: httpx.Client, waiting: int) -> list[httpx.Response]:
    """PostgreSQL refuses NUL in text: a body field or a prompt name holding one was a 503
    ("database error") before the models and the name lookup refused it (NUL_ANSWERS now)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = f"/v1/prompts/{NAME}"
    answers = [
        client.post(f"{base}/candidates/{waiting}/reject", json=body, headers=auth)
        for body in ({"by": "a\x00b", "reason": "x"}, {"by": "alice", "reason": "x\x00"})
    ]
    answers.append(
        client.post(f"{base}/candidates/{waiting}/approve", json={"by": "a", "note": "\x00"})
    )
    answers.append(client.post(f"{base}/rollback", json={"by": "\x00"}, headers=auth))
    answers.append(client.get("/v1/prompts/a%00b/versions"))
    return answers


def test_r5b_schemathesis_finds_no_server_error(
    sqlite_url: str, postgres_url: str, migrated_engine: Callable[[str], Engine]
) -> None:
    examples = sized(ci=10, full=300)
    found = Fuzzed(Counter(), [])
    nul: list[list[int]] = []
    changed = 0
    for url in (sqlite_url, postgres_url):
        engine = migrated_engine(url)
        waiting = staged(engine)
        with fuzzed_server(engine) as client:
            before = snapshot(engine)
            answers = nul_answers(client, waiting)
            changed += snapshot(engine) != before
            nul.append([answer.status_code for answer in answers])
            found.statuses.update(answer.status_code for answer in answers)
            base_url = str(client.base_url).rstrip("/")
            fuzz(base_url + "/openapi.json", base_url, examples, found)
    requests = sum(found.statuses.values())
    record(
        Row(
            row="R5b",
            test="test_r5b_schemathesis_finds_no_server_error",
            load=f"schemathesis 4.32.5, {examples} examples per operation (valid and invalid), "
            f"and {len(NUL_ANSWERS)} NUL-character requests; {requests} requests, SQLite and "
            "PostgreSQL",
            faults="generated paths, queries, headers and bodies, valid and invalid",
            goal="no 5xx",
            result=f"{len(found.failures)} 5xx; answers {dict(sorted(found.statuses.items()))}",
            passed=not found.failures and nul == [NUL_ANSWERS] * 2 and changed == 0,
            lost=0,
            duplicated=0,
        )
    )
    assert requests > 0
    assert not found.failures, found.failures[:5]
    assert nul == [NUL_ANSWERS] * 2
    assert changed == 0
