"""deploy/grafana/dashboard.json is what deploy/grafana/dashboard.py generates now (run
`make dashboard` after changing the generator), and every panel queries Prometheus through
the dashboard's data source variable."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

GRAFANA_DIR = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def generator() -> ModuleType:
    """deploy/grafana/dashboard.py, imported from its file (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gepa_dashboard", GRAFANA_DIR / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checked_in() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in checked_in()["panels"] if panel["type"] != "row"]


def test_the_checked_in_dashboard_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_bytes() == generator().render().encode("utf-8"), (
        "dashboard.json is stale: run `make dashboard`"
    )


def test_running_the_generator_writes_the_same_file(tmp_path: Path) -> None:
    module = generator()
    module.OUTPUT = tmp_path / "dashboard.json"
    module.main()
    assert module.OUTPUT.read_bytes() == DASHBOARD.read_bytes()


def test_the_data_source_and_prompt_are_template_variables() -> None:
    variables = {v["name"]: v for v in checked_in()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    prompt = variables["prompt"]
    assert (prompt["type"], prompt["datasource"]) == ("query", DATASOURCE)
    assert prompt["multi"] and prompt["includeAll"] and prompt["allValue"] == ".*"


@pytest.mark.parametrize("panel", panels(), ids=lambda panel: panel["title"])
def test_every_panel_queries_the_data_source_variable(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"], "a panel without a query"
    for target in panel["targets"]:
        assert target["datasource"] == DATASOURCE
        assert target["expr"].strip()
        assert target["refId"]
    assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_decisions_and_deliveries_are_annotations() -> None:
    annotations = {a["name"]: a for a in checked_in()["annotations"]["list"]}
    assert set(annotations) == {"Activations", "Rollbacks", "Approvals", "Publish failures"}
    for annotation in annotations.values():
        assert annotation["datasource"] == DATASOURCE
        assert annotation["enable"]
    assert "changes(gepa_sidecar_active_prompt_version" in annotations["Activations"]["expr"]
    assert "gepa_sidecar_rollbacks_total" in annotations["Rollbacks"]["expr"]


def test_the_panels_the_issue_asks_for_are_there() -> None:
    titles = {panel["title"]: panel for panel in panels()}
    wanted = {
        "Mean judge score by version": "timeseries",
        "Judge score distribution": "heatmap",
        "Shadow score delta": "timeseries",
        "Candidates by status": "table",
        "LLM cost per role": "timeseries",
        "LLM tokens per role": "timeseries",
        "Consumer lag": "timeseries",
        "Judge errors": "timeseries",
    }
    assert {title: titles[title]["type"] for title in wanted if title in titles} == wanted
    (buckets,) = titles["Judge score distribution"]["targets"]
    assert buckets["format"] == "heatmap"
    assert "gepa_sidecar_judge_score_bucket" in buckets["expr"]
