"""What the CLI tests share: `gepa-sidecar` run as a subprocess in a controlled environment,
its one-line errors, and databases as a running sidecar leaves them."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from sidecar.events import ConsumedEvent, TrafficEvent
from sidecar.store.database import create_database_engine, migrate
from sidecar.store.repository import seed_prompt, store_events
from tests.helpers import encode, make_event, scaled
from tests.versions import NAME

# Deadlock guards, not speed limits: a cold `optimize` (importing litellm) took 15 s idle and
# 36.5 s on a busy 2-core machine.
COMMAND_TIMEOUT_S = scaled(60)
SEED = {"system_prompt": "You help customers."}


def environment(**settings: str) -> dict[str, str]:
    """The test's environment without any SIDECAR_* variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def sidecar(cwd: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m sidecar ARGS` in `cwd` (where no .env exists)."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        cwd=cwd,
        env=environment(**settings),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.strip()
    for name in names:
        assert name in line
    return line


def prepare_database(url: str) -> None:
    """A database as a running sidecar leaves it: 5 accepted events and the seed prompt."""
    rng = random.Random(5)
    now = datetime.now(UTC)
    batch = [
        ConsumedEvent(TrafficEvent.model_validate_json(encode(make_event(rng))), 0, offset)
        for offset in range(5)
    ]
    engine = create_database_engine(url)
    try:
        migrate(engine)
        store_events(engine, batch, {}, now)
        seed_prompt(engine, "customer-care", {"system_prompt": "You help customers."}, now)
    finally:
        engine.dispose()


def prepared(
    tmp_path: Path, url: str, migrated_engine: Callable[[str], Engine]
) -> tuple[Engine, dict[str, str]]:
    """A database as a running sidecar leaves it (the seed v1 active) and the CLI's settings."""
    engine = migrated_engine(url)
    seed_prompt(engine, NAME, SEED, datetime.now(UTC))
    config = tmp_path / "prompts.yaml"
    config.write_text(f"prompts:\n  - name: {NAME}\n    seed: {json.dumps(SEED)}\n")
    return engine, {"SIDECAR_DATABASE_URL": url, "SIDECAR_CONFIG_FILE": str(config)}
