"""The metric families' bounded labels, the series that exist from the start, and the gauges
whose series come and go (awaiting approval, consumer lag)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import sidecar
from sidecar.metrics import (
    JUDGE_OUTCOMES,
    PREFIX,
    RUN_OUTCOMES,
    SHADOW_OUTCOMES,
    UNKNOWN_PROMPT,
    UNMANAGED_PROMPT,
    Metrics,
)

NAME = "customer-care"
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def series(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called `name` in the exposition, by its sorted labels."""
    text = generate_latest(metrics.registry).decode()
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_only_managed_names_become_prompt_labels() -> None:
    metrics = Metrics([NAME, "billing-bot"])
    assert metrics.prompt_label(NAME) == NAME
    assert metrics.prompt_label("billing-bot") == "billing-bot"
    assert metrics.prompt_label("Customer-Care") == UNMANAGED_PROMPT
    assert metrics.prompt_label("junk") == UNMANAGED_PROMPT
    assert metrics.prompt_label("") == UNKNOWN_PROMPT
    assert metrics.prompt_label(None) == UNKNOWN_PROMPT


def test_traffic_naming_many_prompts_adds_one_series_not_one_each() -> None:
    metrics = Metrics([NAME])
    counts = {(f"junk-{i}", "accepted"): 1 for i in range(500)}
    metrics.count_outcomes({**counts, (NAME, "accepted"): 2, (NAME, "invalid"): 0})
    assert series(metrics, PREFIX + "events_consumed_total") == {
        (("outcome", "accepted"), ("prompt", NAME)): 2.0,
        (("outcome", "accepted"), ("prompt", UNMANAGED_PROMPT)): 500.0,
    }


def test_fixed_outcome_counters_are_exported_at_zero_from_the_start() -> None:
    metrics = Metrics([NAME], publish_targets=("file", "kafka"))
    for name, outcomes in (
        ("judge_requests_total", JUDGE_OUTCOMES),
        ("optimization_runs_total", RUN_OUTCOMES),
        ("shadow_passes_total", SHADOW_OUTCOMES),
    ):
        assert series(metrics, PREFIX + name) == {
            (("outcome", outcome),): 0.0 for outcome in outcomes
        }
    assert set(RUN_OUTCOMES) >= {"finished", "failed", "skipped", "not_leader", "interrupted"}
    assert series(metrics, PREFIX + "publishes_total") == {
        (("outcome", outcome), ("target", target)): 0.0
        for target in ("file", "kafka")
        for outcome in ("ok", "failed")
    }


def test_build_info_names_the_running_version() -> None:
    assert series(Metrics([]), PREFIX + "build_info") == {(("version", sidecar.__version__),): 1.0}


def test_the_default_process_platform_and_gc_collectors_are_registered() -> None:
    metrics = Metrics([])
    assert series(metrics, "process_cpu_seconds_total")
    assert series(metrics, "process_resident_memory_bytes")
    assert series(metrics, "python_info")
    assert series(metrics, "python_gc_objects_collected_total")


def test_awaiting_approval_is_the_oldest_wait_and_goes_when_none_waits() -> None:
    metrics = Metrics([NAME, "billing-bot"])
    gauge = PREFIX + "awaiting_approval_since_timestamp_seconds"
    metrics.show_awaiting_approval(
        {NAME: T0, "billing-bot": T0 + timedelta(hours=1), "junk": T0 + timedelta(hours=3)}
    )
    assert series(metrics, gauge) == {
        (("prompt", NAME),): T0.timestamp(),
        (("prompt", "billing-bot"),): T0.timestamp() + 3600,
        (("prompt", UNMANAGED_PROMPT),): T0.timestamp() + 3 * 3600,
    }
    metrics.show_awaiting_approval({"billing-bot": T0 + timedelta(hours=2)})
    assert series(metrics, gauge) == {(("prompt", "billing-bot"),): T0.timestamp() + 7200}
    metrics.show_awaiting_approval({})
    assert series(metrics, gauge) == {}


def test_unmanaged_prompts_share_the_oldest_wait_among_them() -> None:
    metrics = Metrics([])
    gauge = PREFIX + "awaiting_approval_since_timestamp_seconds"
    metrics.show_awaiting_approval({"a": T0 + timedelta(hours=1), "b": T0})
    assert series(metrics, gauge) == {(("prompt", UNMANAGED_PROMPT),): T0.timestamp()}


def test_forgetting_partitions_removes_only_their_lag_series() -> None:
    metrics = Metrics([])
    for partition in (0, 1, 2):
        metrics.consumer_lag.labels("gepa.traffic", str(partition)).set(partition * 10)
    metrics.forget_partitions({("gepa.traffic", 1), ("gepa.traffic", 7)})
    assert series(metrics, PREFIX + "consumer_lag_records") == {
        (("partition", "0"), ("topic", "gepa.traffic")): 0.0,
        (("partition", "2"), ("topic", "gepa.traffic")): 20.0,
    }


def test_the_active_versions_score_series_exists_before_its_first_judgment() -> None:
    metrics = Metrics([NAME])
    metrics.show_active(NAME, 3)
    metrics.show_active("someone-elses", 7)
    assert series(metrics, PREFIX + "active_prompt_version") == {
        (("prompt", NAME),): 3.0,
        (("prompt", UNMANAGED_PROMPT),): 7.0,
    }
    assert series(metrics, PREFIX + "judge_score_count") == {
        (("prompt", NAME), ("version", "3")): 0.0,
        (("prompt", UNMANAGED_PROMPT), ("version", "7")): 0.0,
    }
