"""The customer-care world for the simulated models (sidecar/simulated/): what `make demo` runs
on unless real models are configured.

- task: the reply a literal model gives. It states the message's policy fact only when the
  system prompt states it (in one sentence), thanks the customer only when told to, and names a
  next step only when told to; otherwise it is politely vague;
- judge: `policy_metric`, so the simulated judge and the code metric always agree;
- reflect: adds to the instruction every fact, and the courtesy and next-step rules, that the
  feedback lines of the reflection prompt name as missing and the instruction still lacks.

From the seed ("You are a helpful customer care assistant.", score 0) each fact added lifts one
intent; the five facts, courtesy and a next step make every bundled message score 1.0.

    python -m sidecar.simulated --world examples.customer_care.world:CustomerCareWorld
"""

from __future__ import annotations

import re

from examples.customer_care.checks import (
    MISSING_COURTESY,
    MISSING_NEXT_STEP,
    NEXT_STEP,
    intent_of,
    missing_policy,
    policy_metric,
)
from examples.customer_care.policies import POLICIES, Policy, normal
from sidecar.simulated.world import instruction_and_evidence

ASKS_COURTESY = ("thank", "courteous", "polite", "apologi")
COURTESY_RULE = "Thank the customer for reaching out."
NEXT_STEP_RULE = "End every reply with 'Next step:' and what the customer should do next."
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def states(policy: Policy, instruction: str) -> bool:
    """Does one sentence of the instruction state the policy's fact?"""
    return any(policy.stated_in(s) for s in _SENTENCE.findall(instruction))


def asks_courtesy(instruction: str) -> bool:
    rules = normal(instruction)
    return any(word in rules for word in ASKS_COURTESY)


def task_reply(system: str, user: str) -> str:
    """The task rule: what a model that does exactly what the system prompt says would reply."""
    policy = intent_of(user)
    parts = ["Thank you for reaching out."] if asks_courtesy(system) else []
    parts.append(policy.sentence if states(policy, system) else policy.vague)
    if NEXT_STEP in normal(system):
        parts.append(f"Next step: {policy.next_step}")
    return " ".join(parts)


def reflect(prompt: str) -> str:
    """The reflection rule: the instruction with every missing item the feedback names added,
    as a `Change:` line and a ``` block (unchanged when the feedback names nothing new)."""
    text, evidence = instruction_and_evidence(prompt)
    added: list[tuple[str, str]] = [
        (f"the {policy.label} policy", policy.sentence)
        for policy in POLICIES
        if missing_policy(policy) in evidence and not states(policy, text)
    ]
    if MISSING_COURTESY in evidence and not asks_courtesy(text):
        added.append(("courtesy", COURTESY_RULE))
    if MISSING_NEXT_STEP in evidence and NEXT_STEP not in normal(text):
        added.append(("a next step", NEXT_STEP_RULE))
    if not added:
        return f"Change: the feedback names nothing the instruction lacks.\n```\n{text}\n```"
    names = [name for name, _ in added]
    what = " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
    new = " ".join([text, *(sentence for _, sentence in added)]).strip()
    return f"Change: added {what}: the feedback says the replies lack them.\n```\n{new}\n```"


class CustomerCareWorld:
    """The three rules `sidecar.simulated.LlmServer` answers by, for the example chatbot."""

    def task(self, system: str, user: str) -> str:
        return task_reply(system, user)

    def judge(self, user_message: str, reply: str) -> tuple[float, str]:
        return policy_metric({"user_message": user_message}, reply)

    def reflect(self, prompt: str) -> str:
        return reflect(prompt)
