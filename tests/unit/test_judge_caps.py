"""The judge's caps, driven through simulated hours by a clock the test owns."""

from __future__ import annotations

import heapq
import random
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.judge.caps import HOUR_S, JudgeCaps, JudgingLimits
from sidecar.judge.worker import SPEND_READ_EVERY_S, backlog_pause_s
from sidecar.settings import JudgingBlock, PromptSpec, load_prompts_config, load_settings


def limits(
    budget: float | None = None, rate: int | None = None, age: float = 168.0
) -> JudgingLimits:
    return JudgingLimits(budget, rate, age)


def simulate(
    caps: JudgeCaps,
    hours: float,
    price: float | tuple[float, float],
    rng: random.Random,
    concurrency: int = 16,
    step_s: float = 1.0,
    unpriced: bool = False,
) -> list[tuple[float, float]]:
    """Keep asking for `concurrency` judgments each step; each takes 0.5-20 s and costs
    `price` (or a price drawn from the range). Returns (finish time, cost, start time) of
    each: spend counts when a judgment ends, the rate when it starts."""
    in_flight: list[tuple[float, float, float]] = []
    done: list[tuple[float, float, float]] = []
    now = 0.0
    while now < hours * HOUR_S:
        while in_flight and in_flight[0][0] <= now:
            at, cost, began = heapq.heappop(in_flight)
            caps.finish(at, 0.0 if unpriced else cost, 1, 1 if unpriced else 0)
            done.append((at, cost, began))
        started = caps.admit(concurrency - len(in_flight), now)
        for _ in range(started):
            cost = price if isinstance(price, float) else rng.uniform(*price)
            heapq.heappush(in_flight, (now + rng.uniform(0.5, 20.0), cost, now))
        now += step_s
    return done


def most_in_any(done: list[tuple[float, float, float]], window_s: float, of: str) -> float:
    """The largest spend (by finish) or number started over any window of `window_s`."""
    times = sorted((at, cost) if of == "cost" else (began, 1.0) for at, cost, began in done)
    best = 0.0
    start = 0
    total = 0.0
    for end in range(len(times)):
        total += times[end][1]
        while times[start][0] <= times[end][0] - window_s:
            total -= times[start][1]
            start += 1
        best = max(best, total)
    return best


def test_the_budget_holds_within_one_judgments_price_over_simulated_hours() -> None:
    rng = random.Random(3)
    caps = JudgeCaps(limits(budget=0.05), now=0.0)
    done = simulate(caps, hours=3, price=(0.0009, 0.0011), rng=rng)
    dearest = max(cost for _, cost, _ in done)
    assert most_in_any(done, HOUR_S, "cost") <= 0.05 + dearest
    # the cap is used, not merely respected: about 3 hours' worth were judged
    assert sum(cost for _, cost, _ in done) > 3 * 0.05 * 0.9


def test_until_a_price_is_known_one_judgment_at_a_time_finds_it() -> None:
    caps = JudgeCaps(limits(budget=1.0), now=0.0)
    assert caps.admit(8, now=0.0) == 1
    assert caps.admit(8, now=1.0) == 0
    caps.finish(2.0, 0.25, 1, 0)
    assert caps.admit(8, now=2.0) == 3  # 0.25 spent: three more fit under 1.0
    assert caps.binding == {"budget"}


def test_spend_of_other_processes_counts_against_the_hour() -> None:
    caps = JudgeCaps(limits(budget=1.0), now=0.0)
    caps.admit(1, now=0.0)
    caps.finish(0.0, 0.1, 1, 0)
    assert caps.budget is not None
    caps.budget.others_usd = 0.8
    assert caps.admit(8, now=1.0) == 1  # 0.9 spent in the hour: one more fits
    caps.finish(2.0, 0.1, 1, 0)
    assert caps.admit(8, now=3.0) == 0
    # the first 0.1 left the hour; the others' 0.8 stays until the store is read again
    assert caps.admit(8, now=HOUR_S + 1.0) == 1


def test_an_unpriced_model_is_held_by_the_rate_cap_alone() -> None:
    rng = random.Random(5)
    caps = JudgeCaps(limits(budget=0.01, rate=120), now=0.0)
    done = simulate(caps, hours=0.5, price=0.0, rng=rng, concurrency=64, unpriced=True)
    assert caps.budget is not None and caps.budget.unpriced
    assert most_in_any(done, 60.0, "count") <= 120 + 2  # a burst of two: a second's worth
    assert len(done) > 0.5 * 60 * 120 * 0.95


@pytest.mark.parametrize("per_minute", [1, 6, 300, 6000])
def test_the_rate_cap_holds_in_every_minute(per_minute: int) -> None:
    rng = random.Random(per_minute)
    caps = JudgeCaps(limits(rate=per_minute), now=0.0)
    done = simulate(caps, hours=0.25, price=0.0, rng=rng, concurrency=10_000, step_s=0.25)
    burst = max(1, per_minute // 60)
    assert most_in_any(done, 60.0, "count") <= per_minute + burst
    assert len(done) >= 15 * per_minute * 0.9


def test_a_held_back_reservation_is_given_back() -> None:
    caps = JudgeCaps(limits(budget=1.0, rate=60), now=0.0)
    assert caps.admit(5, now=0.0) == 1
    caps.release(1)  # no event was waiting
    assert caps.admit(5, now=0.0) == 1


def test_prompt_caps_override_the_settings_and_say_so_in_one_line() -> None:
    settings = load_settings(judge_budget_usd_per_hour=2.0, judge_max_per_minute=300)
    spec = PromptSpec(
        name="care",
        seed={"system_prompt": "Help."},
        judging=JudgingBlock(max_per_minute=30, max_event_age_hours=24),
    )
    mine = JudgingLimits.of(settings, spec)
    assert mine == JudgingLimits(2.0, 30, 24.0)
    assert JudgingLimits.of(settings, None) == JudgingLimits(2.0, 300, 168.0)
    assert mine.describe() == (
        "at most $2 an hour, at most 30 judgments a minute; unjudged events older than 24h expire"
    )
    assert "no spend cap, no rate cap" in JudgingLimits.of(load_settings(), None).describe()


def test_a_cap_that_is_not_a_positive_number_is_one_line_naming_where(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "prompts:\n  - name: care\n    seed: {system_prompt: Help.}\n"
        "    judging: {budget_usd_per_hour: -1}\n"
    )
    with pytest.raises(ConfigError, match=r"prompts\.0\.judging\.budget_usd_per_hour"):
        load_prompts_config(config)
    with pytest.raises(ConfigError, match="SIDECAR_JUDGE_MAX_PER_MINUTE"):
        load_settings(judge_max_per_minute=0)


def two_replicas(share: float, rng: random.Random) -> list[tuple[float, float, float]]:
    """Two replicas judging for 3 simulated hours, each reading the other's spend every
    second (as the worker reads the store); returns every judgment as `simulate` does."""
    replicas = [JudgeCaps(limits(budget=0.05), 0.0), JudgeCaps(limits(budget=0.05), 0.0)]
    in_flight: list[list[tuple[float, float, float]]] = [[], []]
    done: list[tuple[float, float, float]] = []
    now = 0.0
    while now < 3 * HOUR_S:
        for caps, mine in zip(replicas, in_flight, strict=True):
            while mine and mine[0][0] <= now:
                at, cost, began = heapq.heappop(mine)
                caps.finish(at, cost, 1, 0)
                done.append((at, cost, began))
        if now % SPEND_READ_EVERY_S == 0:
            for caps, other in ((replicas[0], replicas[1]), (replicas[1], replicas[0])):
                assert caps.budget is not None and other.budget is not None
                caps.budget.others_usd = other.budget.own_usd(now)
        for caps, mine in zip(replicas, in_flight, strict=True):
            for _ in range(caps.admit(16 - len(mine), now, share)):
                heapq.heappush(mine, (now + rng.uniform(0.5, 20.0), rng.uniform(9e-4, 1.1e-3), now))
        now += 1.0
    return done


def test_replicas_that_split_the_budget_hold_it_before_they_read_each_others_spend() -> None:
    split = two_replicas(0.5, random.Random(11))
    dearest = max(cost for _, cost, _ in split)
    assert most_in_any(split, HOUR_S, "cost") <= 0.05 + 2 * dearest
    assert sum(cost for _, cost, _ in split) > 3 * 0.05 * 0.85
    # each taking the whole of what is left: both spend it before either reads the other
    whole = two_replicas(1.0, random.Random(11))
    assert most_in_any(whole, HOUR_S, "cost") > 0.05 + 2 * dearest


def test_backlog_passes_use_a_bounded_share_of_the_time() -> None:
    assert backlog_pause_s(0.01, 10.0) == 10.0  # a quick pass: every 10 s
    assert backlog_pause_s(2.0, 10.0) == pytest.approx(40.0)  # a 2 s scan: 5% of the time
