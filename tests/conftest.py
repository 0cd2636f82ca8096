"""Shared fixtures: a real Kafka-protocol broker, real SQLite files, a real PostgreSQL and a
headless Chromium.

Kafka: KAFKA_BOOTSTRAP_SERVERS (a real cluster) → testcontainers where a Docker engine answers →
the embedded Tansu broker. PostgreSQL: TEST_POSTGRES_URL, default the machine's 127.0.0.1:5432;
each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from sidecar.runtime.kafka import ensure_topics, kafka_cluster
from sidecar.store.database import create_database_engine, migrate
from tests.browser import Browser, artifacts_dir, chromium_driver, missing_browser
from tests.llm_server import LlmServer
from tests.processes import Start, sidecar_processes

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with kafka_cluster(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as servers:
        yield servers


@dataclass(frozen=True)
class Topics:
    traffic: str
    dlq: str
    group: str


@pytest.fixture
def topics(kafka_bootstrap: str) -> Topics:
    """Fresh topic and group names per test, so tests share one broker without sharing data."""
    suffix = uuid.uuid4().hex[:10]
    made = Topics(f"traffic-{suffix}", f"traffic-{suffix}.dlq", f"group-{suffix}")
    ensure_topics(kafka_bootstrap, [made.traffic, made.dlq], partitions=2)
    return made


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sidecar.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Run the test once on a SQLite file and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def migrated_engine() -> Iterator[Callable[[str], Engine]]:
    """Engines on migrated databases, disposed at the end of the test."""
    engines: list[Engine] = []

    def make(url: str) -> Engine:
        engine = create_database_engine(url)
        migrate(engine)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def llm_server() -> Iterator[LlmServer]:
    """Our deterministic OpenAI-compatible server, reached through litellm like a provider."""
    with LlmServer() as server:
        yield server


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[Start]:
    """start(env) runs `gepa-sidecar run` in tmp_path; what is still running is killed after."""
    yield from sidecar_processes(tmp_path)


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    """Headless Chromium (tests/browser.py), quit after the test. Without chromium or chromedriver
    the test fails naming `make browser`: a skipped browser test would hide a broken page."""
    if reason := missing_browser():
        pytest.fail(reason)
    with chromium_driver() as driver:
        yield Browser(driver, artifacts_dir(), prefix=request.node.name)
