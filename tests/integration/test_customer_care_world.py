"""The example chatbot's world on the simulated models (sidecar/simulated/), through litellm: its
literal task model states a policy only when the system prompt does, its judge is the code
metric, its reflection model writes in the facts the feedback names, so GEPA climbs from the seed
to a prompt that states all five. Plus the policy checklist itself, case by case."""

from __future__ import annotations

import asyncio
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from examples.customer_care.checks import policy_metric
from examples.customer_care.messages import MESSAGES
from examples.customer_care.policies import POLICIES
from examples.customer_care.world import COURTESY_RULE, NEXT_STEP_RULE, CustomerCareWorld
from sidecar.errors import ConfigError
from sidecar.events import ConsumedEvent
from sidecar.judge.judge import Judge, judge_for
from sidecar.llm.gateway import Gateway
from sidecar.llm.loop_clients import run_with_models
from sidecar.optimize.budget import Budget
from sidecar.optimize.engine import OptimizationRun
from sidecar.optimize.reflection import Proposer, ReflectionExample
from sidecar.optimize.task import render_task
from sidecar.settings import PromptSpec, Settings, load_prompts_config
from sidecar.simulated import LlmServer, load_world
from sidecar.simulated.__main__ import main as simulated_main
from sidecar.store.candidates import candidates_of
from sidecar.store.judgments import JudgmentRecord, store_judgments
from sidecar.store.repository import seed_prompt, store_events, transaction
from sidecar.store.tables import Event
from tests.helpers import consumed, scaled
from tests.world import world_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples/customer_care/config.yaml"
WORLD = "examples.customer_care.world:CustomerCareWorld"
SPEC: PromptSpec = load_prompts_config(CONFIG).prompts[0]
SEED = SPEC.seed["system_prompt"]
ALL_FACTS = " ".join([SEED, *(p.sentence for p in POLICIES), COURTESY_RULE, NEXT_STEP_RULE])


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with LlmServer(CustomerCareWorld()) as running:
        yield running


def gateway(server: LlmServer, **overrides: Any) -> Gateway:
    return Gateway(world_settings(server.api_base, **overrides))


async def replies(client: Gateway, system_prompt: str, texts: Sequence[str]) -> list[str]:
    """The task model's replies to `texts` under the chatbot's template with this prompt."""

    async def one(text: str) -> str:
        messages = render_task(SPEC.task, {"system_prompt": system_prompt}, {"user_message": text})
        return (await client.complete("task", messages)).text

    return list(await asyncio.gather(*(one(text) for text in texts)))


def scores(texts: Sequence[str], answers: Sequence[str]) -> list[float]:
    return [policy_metric({"user_message": t}, a)[0] for t, a in zip(texts, answers, strict=True)]


# --- the policy checklist --------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.intent)
def test_each_intent_scores_its_own_fact_next_step_and_courtesy(policy: Any) -> None:
    [message, *_] = [m for m in MESSAGES if m.intent == policy.intent]
    inputs = {"user_message": message.text}
    perfect = f"Thanks for asking. {policy.sentence} Next step: reply here."
    assert policy_metric(inputs, perfect) == (
        1.0,
        f"Meets the checklist: the {policy.label} policy, a next step, courtesy.",
    )
    assert policy_metric(inputs, f"{policy.sentence} Next step: reply here.")[0] == 0.8
    assert policy_metric(inputs, f"Thanks. {policy.sentence}")[0] == 0.8
    score, feedback = policy_metric(inputs, "Thanks for asking. Next step: reply here.")
    assert score == 0.4
    assert feedback == f"Missing the {policy.label} policy: state that {policy.fact}."
    others = " ".join(p.sentence for p in POLICIES if p is not policy)
    assert policy_metric(inputs, f"Thanks. {others} Next step: reply.")[0] == 0.4


def test_feedback_names_everything_missing_in_one_line() -> None:
    score, feedback = policy_metric({"user_message": "When will I get my refund?"}, "Okay.")
    assert score == 0.0
    assert feedback == (
        "Missing the refund policy: state that refunds go back to the original payment method "
        "within 5 business days. Missing a next step: end the reply with 'Next step:' and what "
        "to do next. Missing courtesy: thank the customer for reaching out."
    )
    assert "\n" not in feedback


def test_a_paraphrase_of_the_fact_counts() -> None:
    inputs = {"user_message": "How long do refunds take?"}
    reply = (
        "Sorry for the wait! Your money returns to your original payment method in five "
        "business days. Next step: check your statement."
    )
    assert policy_metric(inputs, reply)[0] == 1.0
    half = "Sorry! Refunds take five business days. Next step: wait."
    assert policy_metric(inputs, half)[0] == 0.4  # the payment method is part of the fact


@pytest.mark.parametrize(
    ("message", "label"),
    [
        ("my parcel is late, where is it", "order tracking"),
        ("I need to cancel order 1234 before it goes out", "cancellation"),
        ("I want my money back for the broken lamp", "refund"),
        ("put me through to a supervisor right now", "escalation"),
        ("good morning", "support hours"),  # no keyword at all: the general policy
        ("Can someone help me cancel?", "escalation"),  # a tie goes to the earlier intent
    ],
)
def test_unseen_phrasing_is_classified_by_keywords(message: str, label: str) -> None:
    _, feedback = policy_metric({"user_message": message}, "Okay.")
    assert feedback.startswith(f"Missing the {label} policy:")


def test_every_bundled_message_is_also_classified_right_by_its_keywords() -> None:
    from examples.customer_care.policies import policy_for_keywords

    wrong = [m.text for m in MESSAGES if policy_for_keywords(m.text).intent != m.intent]
    assert wrong == []
    assert len(MESSAGES) == 40
    assert {m.segment for m in MESSAGES} == {"shipping", "billing", "account", "support"}


def test_the_metric_reads_another_prompts_inputs_too() -> None:
    inputs = {"question": "How do I cancel my order?"}
    assert policy_metric(inputs, "Okay.")[1].startswith("Missing the cancellation policy:")


# --- the simulated models, through litellm -----------------------------------------------------


def test_the_seed_scores_zero_and_all_five_facts_score_one_on_every_message(
    server: LlmServer,
) -> None:
    client = gateway(server)
    texts = [m.text for m in MESSAGES]
    seeded = run_with_models(replies(client, SEED, texts))
    assert scores(texts, seeded) == [0.0] * len(texts)
    fixed = run_with_models(replies(client, ALL_FACTS, texts))
    assert scores(texts, fixed) == [1.0] * len(texts)
    assert server.requests == {"ok": 2 * len(texts)}


def test_each_fact_in_the_prompt_lifts_its_intent_only(server: LlmServer) -> None:
    client = gateway(server)
    base = f"{SEED} {COURTESY_RULE} {NEXT_STEP_RULE}"
    for policy in POLICIES:
        answers = run_with_models(
            replies(client, f"{base} {policy.sentence}", [m.text for m in MESSAGES])
        )
        for message, answer in zip(MESSAGES, answers, strict=True):
            expected = 1.0 if message.intent == policy.intent else 0.4
            assert policy_metric({"user_message": message.text}, answer)[0] == expected


def test_the_simulated_judge_agrees_with_the_metric(server: LlmServer) -> None:
    assert SPEC.judge is not None and SPEC.judge.rubric is not None
    judge = Judge(gateway(server), SPEC.judge.rubric, SPEC.judge.examples)  # the model alone
    texts = [m.text for m in MESSAGES[::4]]
    answers = run_with_models(replies(gateway(server), ALL_FACTS.replace(COURTESY_RULE, ""), texts))
    answers[0] = "Okay."
    for text, answer in zip(texts, answers, strict=True):
        verdict = run_with_models(judge.score({"user_message": text}, answer))
        assert (verdict.score, verdict.feedback) == policy_metric({"user_message": text}, answer)


def test_the_configs_judge_blends_the_simulated_judge_with_the_same_checklist(
    server: LlmServer,
) -> None:
    assert SPEC.judge is not None
    assert SPEC.judge.metric == "examples.customer_care.checks:policy_metric"
    judge = judge_for(gateway(server), SPEC)
    text = "Is there a fee if I cancel before it ships?"
    [answer] = run_with_models(replies(gateway(server), f"{SEED} {NEXT_STEP_RULE}", [text]))
    score, feedback = policy_metric({"user_message": text}, answer)
    verdict = run_with_models(judge.score({"user_message": text}, answer))
    assert (verdict.score, verdict.feedback) == (0.2, f"judge: {feedback} | checks: {feedback}")
    assert score == 0.2 and feedback.startswith("Missing the cancellation policy:")


def test_the_simulated_reflector_writes_in_the_facts_the_feedback_names(
    server: LlmServer,
) -> None:
    client = gateway(server)
    chosen = [MESSAGES[0], MESSAGES[17]]  # track order, refund (written in policy order)
    answers = run_with_models(replies(client, SEED, [m.text for m in chosen]))
    examples = [
        ReflectionExample({"user_message": m.text}, a, *policy_metric({"user_message": m.text}, a))
        for m, a in zip(chosen, answers, strict=True)
    ]
    assert SPEC.judge is not None
    proposal = run_with_models(
        Proposer(client).propose("system_prompt", SEED, examples, rubric=SPEC.judge.rubric)
    )
    assert proposal.text == " ".join(
        [SEED, POLICIES[2].sentence, POLICIES[3].sentence, COURTESY_RULE, NEXT_STEP_RULE]
    )
    assert proposal.summary == (
        "added the refund policy, the order tracking policy, courtesy and a next step: "
        "the feedback says the replies lack them."
    )
    assert server.bodies[-1]["response_format"]["json_schema"]["name"] == "proposal"


# --- a GEPA run climbs -----------------------------------------------------------------------


def store_seed_traffic(engine: Engine, settings: Settings, rounds: int) -> None:
    """Every bundled message `rounds` times, answered in production by the seed through the
    task rule and judged as the judge workers would have."""
    now = datetime.now(UTC)
    world = CustomerCareWorld()
    sent = [m for _ in range(rounds) for m in MESSAGES]
    events = []
    for item, message in zip(consumed(random.Random(5), len(sent)), sent, strict=True):
        update = {
            "inputs": {"user_message": message.text},
            "output": world.task(SEED, message.text),
            "metadata": {"segment": message.segment},
        }
        events.append(ConsumedEvent(item.event.model_copy(update=update), 0, item.offset))
    store_events(engine, events, {}, now)
    version = judge_for(Gateway(settings), SPEC).version
    with transaction(engine) as connection:
        rows = connection.execute(select(Event.id, Event.inputs, Event.output)).all()
    records = [
        JudgmentRecord(row_id, SPEC.name, 1, version, *policy_metric(inputs, output))
        for row_id, inputs, output in rows
    ]
    store_judgments(engine, records, now)


def test_gepa_climbs_from_the_seed_to_all_five_facts(
    database_url: str, migrated_engine: Callable[[str], Engine], server: LlmServer
) -> None:
    engine = migrated_engine(database_url)
    seed_prompt(engine, SPEC.name, dict(SPEC.seed), datetime.now(UTC))
    settings = world_settings(server.api_base, run_max_metric_calls=300, optimize_patience=20)
    store_seed_traffic(engine, settings, rounds=1)
    budget = Budget(max_metric_calls=300, max_usd=1.0, max_seconds=scaled(300), patience=20)
    report = run_with_models(OptimizationRun(engine, settings, SPEC, budget, seed=3).execute())
    assert report.champion_score == 0.0
    assert (report.best_score, report.stop_reason) == (1.0, "perfect_on_pareto")
    assert report.metric_calls <= 300  # 81 when this was written
    assert report.best_version in report.proposed
    best = candidates_of(engine, SPEC.name)[report.best_version].components["system_prompt"]
    assert all(policy.sentence in best for policy in POLICIES)


# --- running it --------------------------------------------------------------------------------


def test_python_m_sidecar_simulated_serves_the_world_until_sigterm() -> None:
    command = [sys.executable, "-m", "sidecar.simulated", "--world", WORLD]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                assert selector.select(scaled(30)), "the server printed no api_base"
            api_base = process.stdout.readline().strip()
            reply = run_with_models(
                Gateway(world_settings(api_base)).complete(
                    "task",
                    [
                        {"role": "system", "content": ALL_FACTS},
                        {"role": "user", "content": "How long do refunds take?"},
                    ],
                )
            )
            assert POLICIES[2].sentence in reply.text
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=scaled(30)) == 0
        finally:
            if process.poll() is None:
                process.kill()


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("CustomerCareWorld", "expected module:name"),
        ("examples.customer_care.nowhere:World", "cannot import examples.customer_care.nowhere"),
        ("examples.customer_care.world:Missing", "has no callable Missing"),
        ("examples.customer_care.checks:MESSAGES", "has no callable MESSAGES"),
        ("examples.customer_care.messages:Message", r"Message\(\) failed: .*missing"),
        ("collections:OrderedDict", r"not a World \(no task, judge, reflect\)"),
    ],
)
def test_a_bad_world_name_is_one_clear_line(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_world(spec)


def test_the_command_refuses_a_bad_world_with_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert simulated_main(["--world", "nope"]) == 2
    assert capsys.readouterr().err == (
        "error: --world 'nope': expected module:name, e.g. package.module:MyWorld\n"
    )


def test_a_busy_port_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LlmServer(CustomerCareWorld(), port=port)
        with pytest.raises(
            ConfigError, match=f"simulated models: cannot listen on 127.0.0.1:{port}"
        ):
            server.start()


def test_importing_sidecar_does_not_load_the_simulated_models() -> None:
    code = "import sys, sidecar; print(sorted({'sidecar.simulated', 'uvicorn'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=scaled(60),
    )
    assert result.stdout.strip() == "[]"
