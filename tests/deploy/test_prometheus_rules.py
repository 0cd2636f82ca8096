"""deploy/prometheus/rules.yaml through the real promtool: the rules load, their unit tests
(rules.test.yaml) pass, every alert has a case where it fires and one where it stays quiet,
every recording rule has an expected value, and every alert says how bad and where to start."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import scaled

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yaml"
RULE_TESTS = PROMETHEUS_DIR / "rules.test.yaml"
SEVERITIES = {"critical", "warning", "info"}
ANNOTATIONS = {"summary", "description", "runbook"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is missing: `make prometheus` installs it (Debian)"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=scaled(60), check=False
    )


def rules_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in document["groups"] for rule in group["rules"]]


def untested_alerts(rules: dict[str, Any], tests: dict[str, Any]) -> dict[str, set[str]]:
    """Alert names without a firing case ("fires") or without a quiet case ("quiet"), and
    alert names the tests use that no rule defines ("unknown": promtool would pass those
    quietly, since an alert that does not exist never fires)."""
    alerts = {rule["alert"] for rule in rules_of(rules) if "alert" in rule}
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    return {
        "fires": alerts - firing,
        "quiet": alerts - quiet,
        "unknown": (firing | quiet) - alerts,
    }


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_promtool_runs_the_rules_unit_tests() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_fails_a_rule_test_that_expects_the_wrong_thing(tmp_path: Path) -> None:
    """The unit tests can fail: the score-drop alert's firing case, expected quiet."""
    tests = load(RULE_TESTS)
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            if check["alertname"] == "GepaSidecarActivePromptScoreDrop":
                check["exp_alerts"] = []
    shutil.copy(RULES, tmp_path / RULES.name)
    broken = tmp_path / RULE_TESTS.name
    broken.write_text(yaml.safe_dump(tests), encoding="utf-8")
    tested = promtool("test", "rules", str(broken))
    assert tested.returncode != 0
    assert "GepaSidecarActivePromptScoreDrop" in tested.stdout + tested.stderr


def test_every_alert_fires_in_one_case_and_stays_quiet_in_another() -> None:
    assert untested_alerts(load(RULES), load(RULE_TESTS)) == {
        "fires": set(),
        "quiet": set(),
        "unknown": set(),
    }


def test_a_new_alert_without_cases_is_reported() -> None:
    rules = load(RULES)
    rules["groups"][-1]["rules"].append({"alert": "GepaSidecarNew", "expr": "vector(1)"})
    tests = load(RULE_TESTS)
    tests["tests"].append(
        {"alert_rule_test": [{"alertname": "GepaSidecarTypo", "eval_time": "1m"}]}
    )
    assert untested_alerts(rules, tests) == {
        "fires": {"GepaSidecarNew"},
        "quiet": {"GepaSidecarNew"},
        "unknown": {"GepaSidecarTypo"},
    }


def test_every_recording_rule_has_an_expected_value() -> None:
    recorded = {rule["record"] for rule in rules_of(load(RULES)) if "record" in rule}
    checked = {
        sample["labels"].split("{")[0]
        for case in load(RULE_TESTS)["tests"]
        for check in case.get("promql_expr_test", [])
        for sample in check["exp_samples"]
    }
    assert recorded
    assert recorded <= checked


@pytest.mark.parametrize(
    "rule",
    [rule for rule in rules_of(load(RULES)) if "alert" in rule],
    ids=lambda rule: rule["alert"],
)
def test_every_alert_waits_names_its_severity_and_says_where_to_start(
    rule: dict[str, Any],
) -> None:
    assert rule.get("for"), "an alert without `for` pages on one bad evaluation"
    assert rule["labels"]["severity"] in SEVERITIES
    assert set(rule["annotations"]) == ANNOTATIONS
    assert 'README.md, "Alerts and dashboard"' in rule["annotations"]["runbook"]
    assert "\n## Alerts and dashboard\n" in README.read_text(encoding="utf-8")
