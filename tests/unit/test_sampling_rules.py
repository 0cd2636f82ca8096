"""Per-prompt and per-segment sample rates: which rate an event meets, that ingest's plan keeps
exactly the events the hash puts below it (and carries the rate), that the rules cross to the
writer process intact, and that a bad `sampling` block in CONFIG_FILE is one line."""

from __future__ import annotations

import pickle
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.errors import ConfigError
from sidecar.ingest.batch import plan_batch
from sidecar.ingest.sampling import (
    PromptRates,
    SamplingRules,
    event_weight,
    is_sampled,
    sample_point,
)
from sidecar.settings import PromptsConfig, load_prompts_config
from tests.helpers import encode, make_event

CARE = "customer-care"
SEED = {"system_prompt": "You are helpful."}
RULES = SamplingRules(
    0.5,
    {
        CARE: PromptRates(0.3, {"billing": 1.0, "shipping": 0.05}),
        "faq": PromptRates(None, {"returns": 0.2}),
    },
)
rates = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@dataclass(frozen=True)
class Record:
    """A consumer record as plan_batch reads it."""

    value: bytes | None
    offset: int
    topic: str = "traffic"
    partition: int = 0
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] | None = None


def events(count: int, seed: int, **overrides: Any) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [make_event(rng, **overrides) for _ in range(count)]


def with_segment(event: dict[str, Any], segment: str | None) -> dict[str, Any]:
    return {**event, "metadata": {} if segment is None else {"segment": segment}}


@pytest.mark.parametrize(
    ("prompt", "segment", "rate"),
    [
        (CARE, "billing", 1.0),  # the segment is listed: its rate
        (CARE, "shipping", 0.05),
        (CARE, "returns", 0.3),  # not listed for this prompt: the prompt's rate
        (CARE, None, 0.3),  # no segment: the prompt's rate
        ("faq", "returns", 0.2),
        ("faq", "billing", 0.5),  # no prompt rate: SAMPLE_RATE
        ("faq", None, 0.5),
        ("unmanaged", "billing", 0.5),  # not in CONFIG_FILE: SAMPLE_RATE
        ("unmanaged", None, 0.5),
    ],
)
def test_the_rate_is_the_segments_else_the_prompts_else_the_default(
    prompt: str, segment: str | None, rate: float
) -> None:
    assert RULES.rate(prompt, segment) == rate


def test_rules_are_built_from_config_file_prompts_with_a_sampling_block() -> None:
    config = PromptsConfig.model_validate(
        {
            "prompts": [
                {"name": CARE, "seed": SEED, "sampling": {"segments": {"billing": 1}}},
                {"name": "faq", "seed": SEED, "sampling": {"rate": 0.1}},
                {"name": "plain", "seed": SEED},
            ]
        }
    )
    rules = SamplingRules.of(0.25, config.prompts)
    assert rules == SamplingRules(
        0.25, {CARE: PromptRates(None, {"billing": 1.0}), "faq": PromptRates(0.1, {})}
    )
    assert (rules.rate(CARE, "billing"), rules.rate(CARE, "shipping")) == (1.0, 0.25)
    assert (rules.rate("faq", "billing"), rules.rate("plain", "billing")) == (0.1, 0.25)


def test_rules_cross_to_the_writer_process_intact() -> None:
    assert pickle.loads(pickle.dumps(RULES)) == RULES


@pytest.mark.parametrize(
    ("default", "prompts", "where"),
    [
        (1.5, {}, "default"),
        (-0.1, {}, "default"),
        (float("nan"), {}, "default"),
        (0.5, {CARE: PromptRates(2.0)}, CARE),
        (0.5, {CARE: PromptRates(None, {"billing": -1.0})}, "segment 'billing'"),
    ],
)
def test_a_rate_outside_0_to_1_is_a_programming_error(
    default: float, prompts: dict[str, PromptRates], where: str
) -> None:
    with pytest.raises(ValueError, match=where):
        SamplingRules(default, prompts)


def test_plan_keeps_exactly_what_the_hash_puts_below_each_events_rate() -> None:
    segments = ["billing", "shipping", "returns", None]
    made = [with_segment(e, segments[i % 4]) for i, e in enumerate(events(800, seed=1))]
    made += events(200, seed=2, prompt_name="unmanaged")
    plan = plan_batch([Record(encode(e), i) for i, e in enumerate(made)], RULES)

    def rate(event: dict[str, Any]) -> float:
        return RULES.rate(event["prompt_name"], event["metadata"].get("segment"))

    kept = {str(c.event.event_id): c.sample_rate for c in plan.consumed}
    expected = {e["event_id"]: rate(e) for e in made if sample_point(e["event_id"]) < rate(e)}
    assert kept == expected
    billing = [e for e in made if e["metadata"].get("segment") == "billing"]
    assert all(e["event_id"] in kept for e in billing if e["prompt_name"] == CARE)
    dropped = {CARE: 0, "unmanaged": 0}
    for event in made:
        dropped[event["prompt_name"]] += event["event_id"] not in kept
    assert plan.outcomes == {(name, "sampled_out"): n for name, n in dropped.items()}
    assert plan.size == len(made)


def test_a_plain_number_is_one_rate_for_every_event() -> None:
    made = events(300, seed=3)
    plan = plan_batch([Record(encode(e), i) for i, e in enumerate(made)], 0.3)
    assert {str(c.event.event_id) for c in plan.consumed} == {
        e["event_id"] for e in made if is_sampled(e["event_id"], 0.3)
    }
    assert {c.sample_rate for c in plan.consumed} == {0.3}


@settings(max_examples=50, deadline=None)
@given(billing=rates, shipping=rates, prompt=rates, default=rates)
def test_every_replica_and_redelivery_decides_the_same(
    billing: float, shipping: float, prompt: float, default: float
) -> None:
    """Two replicas building the same rules from the same settings, planning different orders
    and partitions of the same records (a redelivery, a rebalance), keep the same events."""
    rates_ = {CARE: PromptRates(prompt, {"billing": billing, "shipping": shipping})}
    made = [
        with_segment(e, ["billing", "shipping", None][i % 3]) for i, e in enumerate(events(90, 4))
    ]
    records = [Record(encode(e), i) for i, e in enumerate(made)]
    first = plan_batch(records, SamplingRules(default, rates_))
    moved = [Record(r.value, r.offset + 1000, partition=1) for r in reversed(records)]
    second = plan_batch(moved, SamplingRules(default, dict(rates_)))
    assert {c.event.event_id for c in first.consumed} == {c.event.event_id for c in second.consumed}
    assert first.outcomes == second.outcomes


def test_a_stored_event_weighs_one_over_its_rate() -> None:
    assert (event_weight(None), event_weight(1.0), event_weight(0.25)) == (1.0, 1.0, 4.0)
    for impossible in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="sample rate"):
            event_weight(impossible)


def config_error(tmp_path: Path, sampling: object) -> str:
    path = tmp_path / "prompts.yaml"
    prompt = {"name": CARE, "seed": SEED, "sampling": sampling}
    path.write_text(yaml.safe_dump({"prompts": [prompt]}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_prompts_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith("SIDECAR_CONFIG_FILE: ")
    return message


@pytest.mark.parametrize(
    ("sampling", "where"),
    [
        ({"segments": {"billing": 1.5}}, "prompts.0.sampling.segments.billing"),
        ({"segments": {"billing": -0.1}}, "prompts.0.sampling.segments.billing"),
        ({"segments": {"billing": "all"}}, "prompts.0.sampling.segments.billing"),
        ({"segments": {"": 0.5}}, "prompts.0.sampling.segments"),
        ({"rate": 2}, "prompts.0.sampling.rate"),
        ({"rate": 0.5, "per_segment": {"billing": 1}}, "prompts.0.sampling.per_segment"),
        ({"segments": ["billing"]}, "prompts.0.sampling.segments"),
    ],
)
def test_a_bad_sampling_block_is_one_line_naming_where(
    tmp_path: Path, sampling: object, where: str
) -> None:
    assert where in config_error(tmp_path, sampling)


def test_a_good_sampling_block_loads(tmp_path: Path) -> None:
    path = tmp_path / "prompts.yaml"
    sampling = {"rate": 0.2, "segments": {"billing": 1, "shipping": 0.05}}
    prompt = {"name": CARE, "seed": SEED, "sampling": sampling}
    path.write_text(yaml.safe_dump({"prompts": [prompt]}), encoding="utf-8")
    rules = SamplingRules.of(1.0, load_prompts_config(path).prompts)
    assert rules.prompts[CARE] == PromptRates(0.2, {"billing": 1.0, "shipping": 0.05})
