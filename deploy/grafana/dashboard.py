"""The gepa-sidecar Grafana dashboard, built with Grafana's typed builders
(grafana-foundation-sdk) so that dashboard.json is generated, never edited by hand.

`python deploy/grafana/dashboard.py` (or `make dashboard`) rewrites dashboard.json beside this
file; tests/deploy/test_grafana_dashboard.py fails when the two differ. Panels read the
recording rules of deploy/prometheus/rules.yaml where a mean needs a long window."""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).with_name("dashboard.json")
UID = "gepa-sidecar"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PROMPT = 'prompt=~"$prompt"'
RATE = "$__rate_interval"
SIDECAR_TARGETS = "* on (job, instance) group_left (version) gepa_sidecar_build_info"
"""Joined onto a process_* series, keeps only the sidecar's targets (and names its version)."""


def query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .datasource(DATASOURCE)
    )


def legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def graph(
    title: str, description: str, unit: str, *targets: prometheus.Dataquery
) -> timeseries.Panel:
    """A time series panel on the dashboard's data source."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .legend(legend())
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
        .span(12)
        .height(8)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def score_distribution() -> heatmap.Panel:
    """Prometheus' cumulative buckets, which Grafana's heatmap format turns into counts."""
    return (
        heatmap.Panel()
        .title("Judge score distribution")
        .description("Judged events per score bucket, every version of the selected prompts.")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f"sum by (le) (increase(gepa_sidecar_judge_score_bucket{{{PROMPT}}}[{RATE}]))",
                "{{le}}",
            ).format(PromQueryFormat.HEATMAP)
        )
        .calculate(False)
        .cell_values(heatmap.CellValues().unit("short"))
        .y_axis(heatmap.YAxisConfig().unit("none").decimals(1))
        .span(12)
        .height(8)
    )


def quality_row() -> list[dashboard.Row | timeseries.Panel | stat.Panel | heatmap.Panel]:
    mean = (
        graph(
            "Mean judge score by version",
            "Hourly mean judge score of each prompt version (the active one, or _other), with its "
            "1-day mean: the baseline the score-drop alert compares against.",
            "none",
            query(f"gepa_sidecar:judge_score:mean_1h{{{PROMPT}}}", "{{prompt}} v{{version}} (1h)"),
            query(
                f"gepa_sidecar:judge_score:mean_1d{{{PROMPT}}}",
                "{{prompt}} v{{version}} (1d baseline)",
                "B",
            ),
        )
        .min(0)
        .max(1)
    )
    active = (
        stat.Panel()
        .title("Active version")
        .description("The version each prompt has published.")
        .datasource(DATASOURCE)
        .with_target(
            query(
                f"max by (prompt) (gepa_sidecar_active_prompt_version{{{PROMPT}}})", "{{prompt}}"
            ).instant()
        )
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .decimals(0)
        .span(12)
        .height(8)
    )
    distribution = score_distribution()
    judge_errors = graph(
        "Judge errors",
        "Share of judge attempts that failed, by outcome, and the 15-minute ratio the "
        "judge-errors alert watches.",
        "percentunit",
        query(
            f'sum by (outcome) (rate(gepa_sidecar_judge_requests_total{{outcome!="ok"}}[{RATE}]))'
            " / ignoring (outcome) group_left"
            f" sum(rate(gepa_sidecar_judge_requests_total[{RATE}]))",
            "{{outcome}}",
        ),
        query("gepa_sidecar:judge_requests:error_ratio_15m", "all errors (15m)", "B"),
    )
    return [dashboard.Row("Quality"), mean, active, distribution, judge_errors]


def candidates_row() -> list[dashboard.Row | timeseries.Panel | table.Panel]:
    delta = graph(
        "Shadow score delta",
        "Mean paired score of each candidate in shadow minus the champion's, same events.",
        "none",
        query(
            f"max by (prompt, version) (gepa_sidecar_shadow_score_delta{{{PROMPT}}})",
            "{{prompt}} v{{version}}",
        ),
    )
    pairs = graph(
        "Shadow pairs",
        "Paired comparisons each candidate in shadow has so far.",
        "short",
        query(
            f"max by (prompt, version) (gepa_sidecar_shadow_pairs{{{PROMPT}}})",
            "{{prompt}} v{{version}}",
        ),
    )
    statuses = (
        table.Panel()
        .title("Candidates by status")
        .description("Prompt versions by lifecycle status (a row per prompt), from the store.")
        .datasource(DATASOURCE)
        .with_target(
            query(f"max by (prompt, status) (gepa_sidecar_candidates{{{PROMPT}}})", "")
            .instant()
            .format(PromQueryFormat.TABLE)
        )
        .with_transformation(
            DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"rowField": "prompt", "columnField": "status", "valueField": "Value"},
            )
        )
        .show_header(True)
        .span(12)
        .height(8)
    )
    runs = graph(
        "GEPA runs by outcome",
        "Optimization runs per hour: finished, failed, skipped, not_leader, interrupted.",
        "short",
        query(
            "sum by (outcome) (increase(gepa_sidecar_optimization_runs_total[1h]))", "{{outcome}}"
        ),
    )
    return [dashboard.Row("Shadow and candidates"), delta, pairs, statuses, runs]


def traffic_row() -> list[dashboard.Row | timeseries.Panel]:
    cost = graph(
        "LLM cost per role",
        "USD per hour spent on model calls (litellm's cost map; 0 for unpriced models).",
        "currencyUSD",
        query(f"sum by (role) (rate(gepa_sidecar_llm_cost_usd_total[{RATE}])) * 3600", "{{role}}"),
    )
    tokens = graph(
        "LLM tokens per role",
        "Tokens per second used by model calls, by role and type.",
        "short",
        query(
            f"sum by (role, type) (rate(gepa_sidecar_llm_tokens_total[{RATE}]))",
            "{{role}} {{type}}",
        ),
    )
    consumed = graph(
        "Events consumed",
        "Traffic records per second by prompt and outcome.",
        "short",
        query(
            f"sum by (prompt, outcome) "
            f"(rate(gepa_sidecar_events_consumed_total{{{PROMPT}}}[{RATE}]))",
            "{{prompt}} {{outcome}}",
        ),
    )
    lag = graph(
        "Consumer lag",
        "Records between the consumer group's position and the end of the topic.",
        "short",
        query(
            "sum by (topic) (max by (topic, partition) (gepa_sidecar_consumer_lag_records))",
            "{{topic}}",
        ),
    )
    publishes = graph(
        "Publishes",
        "Deliveries of activated prompt versions by target and outcome.",
        "short",
        query(
            f"sum by (target, outcome) (increase(gepa_sidecar_publishes_total[{RATE}]))",
            "{{target}} {{outcome}}",
        ),
    )
    backlog = graph(
        "Judge backlog",
        "Events each prompt still owes a verdict (never judged, or failed and waiting), and "
        "the age of the oldest: judging newest first, a growing age means a cap holds or the "
        "judge cannot keep up.",
        "short",
        query(f"sum by (prompt) (gepa_sidecar_judge_backlog_events{{{PROMPT}}})", "{{prompt}}"),
    )
    oldest = graph(
        "Oldest unjudged event",
        "Age of the oldest event still owed a verdict; past JUDGE_MAX_EVENT_AGE_HOURS it "
        "expires unjudged. The judge-behind alert fires above an hour.",
        "s",
        query(
            f"max by (prompt) (gepa_sidecar_judge_oldest_unjudged_seconds{{{PROMPT}}})",
            "{{prompt}}",
        ),
    )
    caps = graph(
        "Judge caps and expiry",
        "1 while a cap (budget: USD an hour; rate: judgments a minute) holds back waiting "
        "judgments, and events expired unjudged for being too old.",
        "short",
        query(
            f"max by (prompt, cap) (gepa_sidecar_judge_capped{{{PROMPT}}})",
            "{{prompt}} held by {{cap}}",
        ),
        query(
            f"sum by (prompt) (increase(gepa_sidecar_judge_expired_total{{{PROMPT}}}[{RATE}]))",
            "{{prompt}} expired",
            "B",
        ),
    )
    return [
        dashboard.Row("Cost, traffic and delivery"),
        cost,
        tokens,
        consumed,
        lag,
        backlog,
        oldest,
        caps,
        publishes,
    ]


def process_row() -> list[dashboard.Row | timeseries.Panel]:
    memory = graph(
        "Sidecar memory",
        "Resident memory of each sidecar process: it shares the chatbot's pod.",
        "bytes",
        query(f"process_resident_memory_bytes {SIDECAR_TARGETS}", "{{instance}} v{{version}}"),
    )
    cpu = graph(
        "Sidecar CPU",
        "CPU cores used by each sidecar process.",
        "short",
        query(
            f"rate(process_cpu_seconds_total[{RATE}]) {SIDECAR_TARGETS}",
            "{{instance}} v{{version}}",
        ),
    )
    return [dashboard.Row("The sidecar process"), memory, cpu]


def annotations() -> list[dashboard.AnnotationQuery]:
    """Decisions and deliveries as markers on every panel."""
    markers = (
        (
            "Activations",
            "blue",
            f"max by (prompt) (changes(gepa_sidecar_active_prompt_version{{{PROMPT}}}[2m])) > 0",
        ),
        (
            "Rollbacks",
            "red",
            f"sum by (prompt) (increase(gepa_sidecar_rollbacks_total{{{PROMPT}}}[2m])) > 0",
        ),
        (
            "Approvals",
            "green",
            f"sum by (prompt, decision) (increase(gepa_sidecar_approvals_total{{{PROMPT}}}[2m]))"
            " > 0",
        ),
        (
            "Publish failures",
            "orange",
            'sum by (target) (increase(gepa_sidecar_publishes_total{outcome="failed"}[2m])) > 0',
        ),
    )
    return [
        dashboard.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(color)
        .expr(expr)
        for name, color, expr in markers
    ]


def variables() -> list[dashboard.DatasourceVariable | dashboard.QueryVariable]:
    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        dashboard.QueryVariable("prompt")
        .label("Prompt")
        .datasource(DATASOURCE)
        .query("label_values(gepa_sidecar_active_prompt_version, prompt)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*"),
    ]


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("gepa-sidecar")
        .uid(UID)
        .description("Judge scores, shadow evaluation, candidates, cost and delivery.")
        .tags(["gepa-sidecar"])
        .time("now-24h", "now")
        .refresh("1m")
        .timezone("browser")
    )
    for variable in variables():
        board = board.with_variable(variable)
    for annotation in annotations():
        board = board.annotation(annotation)
    for row in (quality_row(), candidates_row(), traffic_row(), process_row()):
        for item in row:
            board = (
                board.with_row(item) if isinstance(item, dashboard.Row) else board.with_panel(item)
            )
    return board


def render() -> str:
    """dashboard.json's text: sorted keys, two-space indent, a final newline."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
