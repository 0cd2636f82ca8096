"""A `gepa-sidecar run` process killed with SIGKILL after an approval was committed and before
it was delivered publishes it exactly once per target after a restart.

"Before it was delivered" does not rely on timing: the first process polls its outbox once an
hour, and the approval is committed by another client (as the CLI does), which cannot wake it;
that the rows were still pending when the kill landed is asserted, not assumed.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import yaml
from sqlalchemy import Engine

from sidecar.events import PromptDocument
from sidecar.promote.publishers import FilePublisher
from sidecar.store.database import create_database_engine
from sidecar.store.outbox import pending_outbox
from sidecar.store.repository import transaction
from sidecar.store.tables import Candidate
from tests.conftest import Topics
from tests.helpers import activations, scaled, wait_until
from tests.processes import SERVING, Start, sidecar_env
from tests.versions import TARGETS, add_version, approved
from tests.world import SPEC

NAME = SPEC.name


def seeded(engine: Engine) -> bool:
    try:
        with transaction(engine) as connection:
            return connection.execute(Candidate.__table__.select()).first() is not None
    except Exception:  # the tables appear when the sidecar has migrated
        return False


def test_kill_9_between_committing_an_approval_and_delivering_it_publishes_it_once(
    kafka_bootstrap: str,
    topics: Topics,
    database_url: str,
    start_sidecar: Start,
    tmp_path: Path,
) -> None:
    config = tmp_path / "prompts.yaml"
    config.write_text(yaml.safe_dump({"prompts": [SPEC.model_dump(exclude_none=True)]}))
    published = tmp_path / "published"
    env = sidecar_env(kafka_bootstrap, topics, database_url)
    env.update(SIDECAR_CONFIG_FILE=str(config), SIDECAR_PUBLISH_DIR=str(published))
    engine = create_database_engine(database_url)
    try:
        first = start_sidecar({**env, "SIDECAR_PUBLISH_POLL_INTERVAL_S": "3600"})
        wait_until(
            lambda: FilePublisher(published).current(NAME) is not None,
            60,
            "the seed published to the file on start",
        )
        assert seeded(engine)
        version = add_version(engine, "awaiting_approval", name=NAME)
        activation = approved(engine, version, name=NAME)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=scaled(10))
        assert {item.target for item in pending_outbox(engine)} == set(TARGETS)
        assert FilePublisher(published).current(NAME).version == 1

        second = start_sidecar(env)
        wait_until(lambda: not pending_outbox(engine), 60, "every target delivered")
        assert FilePublisher(published).current(NAME).version == version
        topic = env["SIDECAR_PROMPTS_TOPIC"]
        assert activations(kafka_bootstrap, topic) == [(version, activation.id)]
        wait_until(lambda: SERVING.search(second.log.read_bytes()) is not None, 30, "serving")
        served = httpx.get(f"{second.base_url}/v1/prompts/{NAME}/active", timeout=scaled(10))
        document = PromptDocument.model_validate(json.loads(served.content))
        assert (document.version, served.headers["etag"]) == (version, f'"{document.sha256}"')

        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(timeout=scaled(30)) == 0
        assert activations(kafka_bootstrap, topic) == [(version, activation.id)]
    finally:
        engine.dispose()
