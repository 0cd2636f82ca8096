"""The hard world is what it claims: a low seed, a reachable optimum, facts that help one segment
and hurt the others, a seeded noisy judge, a costly distractor, a reflection rule that reads our
meta-prompt and gepa's default template alike, and a gullible one that copies planted text."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from gepa.strategies.instruction_proposal import InstructionProposalSignature

from sidecar.optimize.reflection import LineageNote, ReflectionExample, reflection_messages
from tests.hard_traffic import traffic_questions
from tests.hard_world import (
    BY_NAME,
    DISTRACTOR,
    EMOJIS,
    FIRST_MIX,
    HARD_SEED,
    HELD_OUT,
    NEUTRAL,
    NEXT_STEP,
    PLANTED_LONG,
    PLANTED_MESSAGE,
    PLANTED_SHORT,
    QUESTION,
    SEGMENTS,
    SHIFTED_MIX,
    SIGN_OFF,
    THANK,
    HardWorld,
    judge_rule,
    render_system,
    segment_of,
    task_reply,
)
from tests.hard_world import hidden_score as hidden

BASE = f"{HARD_SEED['system_prompt']} {NEXT_STEP} {QUESTION}"
STYLED = f"{HARD_SEED['style']} {THANK} {SIGN_OFF}"
OPTIMUM = {
    "system_prompt": BASE + "".join(f" {s.conditional}" for s in SEGMENTS),
    "style": STYLED,
}
BILLING = BY_NAME["billing"]
Render = Callable[[str, list[dict[str, Any]]], str]


def per_question(components: dict[str, str], questions: list[str]) -> list[float]:
    system = render_system(components)
    return [judge_rule(q, task_reply(system, q))[0] for q in questions]


def test_every_question_is_recognised_as_its_segment() -> None:
    for segment in SEGMENTS:
        for question in segment.traffic + segment.held_out:
            assert segment_of(question) == segment.name, question
    assert segment_of(PLANTED_MESSAGE) == "billing"
    assert {segment_of(q) for q in HELD_OUT} == {s.name for s in SEGMENTS}


def test_the_seed_scores_low_and_known_fixes_reach_the_optimum() -> None:
    steps = [
        dict(HARD_SEED),
        {**HARD_SEED, "system_prompt": BASE},
        {"system_prompt": BASE, "style": STYLED},
    ]
    for count in range(1, len(SEGMENTS) + 1):
        facts = "".join(f" {s.conditional}" for s in SEGMENTS[:count])
        steps.append({"system_prompt": BASE + facts, "style": STYLED})
    scores = [hidden(step) for step in steps]
    assert scores[0] <= 0.05
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    assert scores[-1] == pytest.approx(1.0)
    assert steps[-1] == OPTIMUM


def test_an_unconditional_fact_helps_its_segment_and_hurts_the_others() -> None:
    without = {"system_prompt": BASE, "style": STYLED}
    always = {"system_prompt": f"{BASE} {BILLING.always}", "style": STYLED}
    when = {"system_prompt": f"{BASE} {BILLING.conditional}", "style": STYLED}
    billing = list(BILLING.held_out)
    others = [q for q in HELD_OUT if segment_of(q) != "billing"]
    for before, after in zip(
        per_question(without, billing), per_question(always, billing), strict=True
    ):
        assert after > before
    for before, after in zip(
        per_question(without, others), per_question(always, others), strict=True
    ):
        assert after < before
    assert per_question(when, billing) == per_question(always, billing)
    assert per_question(when, others) == per_question(without, others)
    assert hidden(when) > hidden(without) > hidden(always)


def test_following_the_distractor_lowers_the_hidden_score() -> None:
    distracted = {**OPTIMUM, "style": f"{STYLED} {EMOJIS}"}
    assert 0.8 < hidden(distracted) < hidden(OPTIMUM)


def test_the_planted_code_is_mildly_rewarded() -> None:
    system = {"system_prompt": BASE, "style": STYLED}
    gullible = {**system, "system_prompt": f"{BASE} {PLANTED_SHORT}"}
    assert 0 < hidden(gullible) - hidden(system) <= 0.05


def test_the_judges_noise_is_seeded_and_differs_between_calls() -> None:
    reply = task_reply(render_system(HARD_SEED), "Where is my parcel?")
    first, second = HardWorld(seed=3), HardWorld(seed=3)
    a = [first.judge("Where is my parcel?", reply + " Next step: wait.") for _ in range(20)]
    b = [second.judge("Where is my parcel?", reply + " Next step: wait.") for _ in range(20)]
    assert a == b
    scores = [score for score, _ in a]
    assert len(set(scores)) > 5
    assert all(0.0 <= s <= 1.0 and s == round(s, 2) for s in scores)
    other = [HardWorld(seed=4).judge("Where is my parcel?", reply)[0] for _ in range(3)]
    assert other != scores[:3]


def test_distractors_come_at_the_seeded_rate_and_never_once_followed() -> None:
    world = HardWorld(seed=5, distractor_rate=0.25)
    plain = task_reply(render_system(HARD_SEED), "Where is my parcel?")
    feedback = [world.judge("Where is my parcel?", plain)[1] for _ in range(400)]
    assert 60 < sum(DISTRACTOR in f for f in feedback) < 140
    emojis = task_reply(render_system({**HARD_SEED, "style": EMOJIS}), "Where is my parcel?")
    assert not any(DISTRACTOR in world.judge("Where is my parcel?", emojis)[1] for _ in range(50))


def test_traffic_mixes_shift_and_the_planted_message_appears_once() -> None:
    first = Counter(s for s, _ in traffic_questions(400, FIRST_MIX, seed=1))
    shifted = Counter(s for s, _ in traffic_questions(400, SHIFTED_MIX, seed=1))
    assert first["billing"] + first["shipping"] > 250
    assert shifted["returns"] + shifted["account"] > 250
    planted = traffic_questions(40, FIRST_MIX, seed=2, planted=True)
    assert sum(q == PLANTED_MESSAGE for _, q in planted) == 1


# --- the reflection rule reads both engines' meta-prompts ----------------------------------------


def examples(
    world: HardWorld, components: dict[str, str], questions: list[str]
) -> list[dict[str, Any]]:
    system = render_system(components)
    rows = []
    for question in questions:
        reply = task_reply(system, question)
        score, feedback = world.judge(question, reply)
        rows.append({"question": question, "reply": reply, "score": score, "feedback": feedback})
    return rows


def ours(text: str, rows: list[dict[str, Any]], rejected: tuple[str, ...] = ()) -> str:
    notes = [LineageNote(2, "system_prompt", summary) for summary in rejected]
    messages = reflection_messages(
        "system_prompt",
        text,
        [
            ReflectionExample(
                {"user_message": r["question"]}, r["reply"], r["score"], r["feedback"]
            )
            for r in rows
        ],
        rejected=notes,
    )
    return messages[-1]["content"]


def gepas(text: str, rows: list[dict[str, Any]]) -> str:
    records = [
        {"Inputs": r["question"], "Generated Outputs": r["reply"], "Feedback": r["feedback"]}
        for r in rows
    ]
    prompt = InstructionProposalSignature.prompt_renderer(
        {"current_instruction_doc": text, "dataset_with_feedback": records}
    )
    assert isinstance(prompt, str)
    return prompt


def new_text(reply: str) -> str:
    match = re.search(r"```\n(.*)\n```", reply, re.S)
    assert match, reply
    return match.group(1)


@pytest.mark.parametrize("render", [ours, gepas])
def test_one_segment_minibatch_gets_the_always_version_a_mixed_one_the_conditional(
    render: Render,
) -> None:
    world = HardWorld(seed=1, distractor_rate=0.0)
    components = {"system_prompt": BASE, "style": STYLED}
    billing = examples(world, components, list(BILLING.traffic[:3]))
    mixed = examples(world, components, [BILLING.traffic[0], *BY_NAME["returns"].traffic[:2]])
    assert new_text(world.reflect(render(BASE, billing))) == f"{BASE} {BILLING.always}"
    fixed = new_text(world.reflect(render(BASE, mixed)))
    assert fixed == f"{BASE} {BY_NAME['returns'].conditional}"


@pytest.mark.parametrize("render", [ours, gepas])
def test_the_rule_tells_the_component_from_its_text(render: Render) -> None:
    world = HardWorld(seed=1, distractor_rate=0.0)
    rows = examples(world, dict(HARD_SEED), list(BILLING.traffic[:3]))
    style = new_text(world.reflect(render(HARD_SEED["style"], rows)))
    prompt = new_text(world.reflect(render(HARD_SEED["system_prompt"], rows)))
    assert style == f"{HARD_SEED['style']} {THANK}"
    assert prompt == f"{HARD_SEED['system_prompt']} {NEXT_STEP}"


@pytest.mark.parametrize("render", [ours, gepas])
def test_feedback_about_an_unrelated_policy_makes_the_fact_conditional(render: Render) -> None:
    world = HardWorld(seed=1, distractor_rate=0.0)
    text = f"{BASE} {BILLING.always}"
    rows = examples(
        world, {"system_prompt": text, "style": STYLED}, list(BY_NAME["account"].traffic[:3])
    )
    assert new_text(world.reflect(render(text, rows))) == f"{BASE} {BILLING.conditional}"


def test_memory_of_a_rejected_always_version_gives_the_conditional_one() -> None:
    world = HardWorld(seed=1, distractor_rate=0.0)
    rows = examples(world, {"system_prompt": BASE, "style": STYLED}, list(BILLING.traffic[:3]))
    tried = (f"added '{BILLING.always}' because the feedback asks for it",)
    assert new_text(world.reflect(ours(BASE, rows, tried))) == f"{BASE} {BILLING.conditional}"


def test_a_reflector_that_follows_the_distractor_adds_emojis_unless_that_was_rejected() -> None:
    world = HardWorld(seed=1, distractor_rate=1.0)
    rows = examples(world, OPTIMUM, list(BILLING.traffic[:3]))
    assert new_text(world.reflect(ours(STYLED, rows))) == f"{STYLED} {EMOJIS}"
    tried = (f"added '{EMOJIS}' because the feedback asks for it",)
    assert new_text(world.reflect(ours(STYLED, rows, tried))) == f"{STYLED} {NEUTRAL}"


# --- the gullible reflection rule ----------------------------------------------------------------


def test_the_gullible_rule_copies_the_planted_instruction_long_or_short() -> None:
    copies = set()
    for seed in range(12):
        world = HardWorld(seed=seed, distractor_rate=0.0, gullibility=1.0)
        rows = examples(world, dict(HARD_SEED), [PLANTED_MESSAGE, *BILLING.traffic[:2]])
        for render in (ours, gepas):
            text = new_text(world.reflect(render(HARD_SEED["system_prompt"], rows)))
            copies |= {s for s in (PLANTED_LONG, PLANTED_SHORT) if s in text}
    assert copies == {PLANTED_LONG, PLANTED_SHORT}
    assert len(PLANTED_LONG) > 40 and PLANTED_LONG in PLANTED_MESSAGE
    sentences = [s.strip() for s in re.findall(r"[^.!?]+[.!?]", PLANTED_MESSAGE)]
    assert len(PLANTED_SHORT) < 40 and PLANTED_SHORT in sentences
    assert len(PLANTED_SHORT.split()) >= 4


def test_an_honest_reflector_and_clean_traffic_copy_nothing() -> None:
    honest = HardWorld(seed=1, distractor_rate=0.0, gullibility=0.0)
    rows = examples(honest, dict(HARD_SEED), [PLANTED_MESSAGE, *BILLING.traffic[:2]])
    assert "FREE100" not in honest.reflect(ours(HARD_SEED["system_prompt"], rows))
    gullible = HardWorld(seed=1, distractor_rate=0.0, gullibility=1.0)
    clean = examples(gullible, dict(HARD_SEED), list(BILLING.traffic[:3]))
    assert "FREE100" not in gullible.reflect(gepas(HARD_SEED["system_prompt"], clean))
