"""What a reliability test measured, as one row of docs/RELIABILITY.md, and how big it runs.

`make test` runs the suite CI-sized (SIDECAR_RELIABILITY_SCALE=ci, the default); `make
reliability` runs it full-sized and writes each test's row as a JSON line to the file named by
SIDECAR_RELIABILITY_RESULTS, from which tests/reliability/table.py makes the table."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

SCALE_ENV = "SIDECAR_RELIABILITY_SCALE"
RESULTS_ENV = "SIDECAR_RELIABILITY_RESULTS"

Scale = Literal["ci", "full"]


def scale() -> Scale:
    found = os.environ.get(SCALE_ENV, "ci")
    if found not in ("ci", "full"):
        raise ValueError(f"{SCALE_ENV} must be ci or full, not {found!r}")
    return "full" if found == "full" else "ci"


def sized(ci: int, full: int) -> int:
    """How many iterations (events, kills, seconds…) a test runs at this scale."""
    return full if scale() == "full" else ci


@dataclass(frozen=True)
class Row:
    """One line of the table: `goal` is what the issue asks, `result` what was measured."""

    row: str  # R1..R7, or a gap the audit found
    test: str
    load: str
    faults: str
    goal: str
    result: str
    passed: bool
    lost: int
    duplicated: int


def record(row: Row) -> None:
    """Append the row to the results file when one is named (`make reliability`)."""
    target = os.environ.get(RESULTS_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps({**asdict(row), "scale": scale()}, sort_keys=True) + "\n")
