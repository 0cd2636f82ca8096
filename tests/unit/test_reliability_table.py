"""The reliability table: one row per test (the last run wins), sorted, cells escaped; and the
scale the suite runs at."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability import rows, table


def row(name: str, test: str, passed: bool = True, result: str = "0 lost") -> dict[str, object]:
    return {
        "row": name,
        "test": test,
        "load": "1,000 records",
        "faults": "garbage | bytes",
        "goal": "0 lost",
        "result": result,
        "passed": passed,
        "lost": 0,
        "duplicated": 0,
    }


def test_the_last_run_of_each_test_wins_in_row_order() -> None:
    made = table.table(
        [row("R2", "kill"), row("R1", "fuzz", False, "2 lost"), row("R1", "fuzz")], "r.jsonl"
    )
    lines = [line for line in made.splitlines() if line.startswith("| R")]
    assert lines == [
        "| R1 | fuzz | 1,000 records | garbage \\| bytes | 0 lost | PASS: 0 lost | 0 | 0 |",
        "| R2 | kill | 1,000 records | garbage \\| bytes | 0 lost | PASS: 0 lost | 0 | 0 |",
    ]
    assert "from r.jsonl" in made


def test_a_failed_row_says_so() -> None:
    made = table.table([row("R4", "llm faults", False, "3 events never judged")], "r.jsonl")
    assert "| FAIL: 3 events never judged |" in made


def test_rows_are_recorded_only_when_a_results_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = rows.Row("R1", "fuzz", "10", "garbage", "0 lost", "0 lost", True, 0, 0)
    monkeypatch.delenv(rows.RESULTS_ENV, raising=False)
    rows.record(measured)
    assert list(tmp_path.iterdir()) == []
    target = tmp_path / "out" / "results.jsonl"
    monkeypatch.setenv(rows.RESULTS_ENV, str(target))
    monkeypatch.setenv(rows.SCALE_ENV, "full")
    rows.record(measured)
    [line] = target.read_text().splitlines()
    assert json.loads(line)["scale"] == "full" and json.loads(line)["test"] == "fuzz"


def test_the_scale_is_ci_unless_told_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rows.SCALE_ENV, raising=False)
    assert rows.sized(ci=20, full=1000) == 20
    monkeypatch.setenv(rows.SCALE_ENV, "full")
    assert rows.sized(ci=20, full=1000) == 1000
    monkeypatch.setenv(rows.SCALE_ENV, "huge")
    with pytest.raises(ValueError, match="ci or full"):
        rows.scale()


def test_the_command_refuses_a_missing_or_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert table.main(["table"]) == 2
    assert table.main(["table", str(tmp_path / "none.jsonl")]) == 1
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert table.main(["table", str(empty)]) == 1
    assert "holds no rows" in capsys.readouterr().err
