"""The customer-care chatbot's code metric (`judge.metric` in config.yaml): a three-item policy
checklist, deterministic, with feedback that names what is missing in one line.

    states the policy of the message's intent   0.6
    names a next step (the words "next step")   0.2
    is courteous (thanks or apologises)          0.2

The intent is the bundled message's own (messages.py) or, for text we did not write, the one its
keywords point to (policies.py)."""

from __future__ import annotations

from collections.abc import Mapping

from examples.customer_care.messages import BY_TEXT
from examples.customer_care.policies import BY_INTENT, Policy, normal, policy_for_keywords

INPUT = "user_message"
POLICY_WEIGHT = 0.6
NEXT_STEP_WEIGHT = 0.2
COURTESY_WEIGHT = 0.2
NEXT_STEP = "next step"
COURTEOUS = ("thank", "sorry", "apologi", "appreciate", "glad to help", "happy to help")
MISSING_NEXT_STEP = "Missing a next step: end the reply with 'Next step:' and what to do next."
MISSING_COURTESY = "Missing courtesy: thank the customer for reaching out."


def intent_of(message: str) -> Policy:
    """The policy a customer's message asks about."""
    bundled = BY_TEXT.get(message.strip())
    return BY_INTENT[bundled.intent] if bundled else policy_for_keywords(message)


def missing_policy(policy: Policy) -> str:
    """The feedback sentence for a reply that does not state `policy`'s fact."""
    return f"Missing the {policy.label} policy: state that {policy.fact}."


def names_next_step(reply: str) -> bool:
    return NEXT_STEP in normal(reply)


def is_courteous(reply: str) -> bool:
    text = normal(reply)
    return any(word in text for word in COURTEOUS)


def policy_metric(inputs: Mapping[str, str], output: str) -> tuple[float, str]:
    """(score in [0, 1], one line of feedback) for a reply to `inputs["user_message"]` (or, for
    another prompt's inputs, to all their values)."""
    policy = intent_of(inputs.get(INPUT) or " ".join(inputs.values()))
    checks = (
        (policy.stated_in(output), POLICY_WEIGHT, missing_policy(policy)),
        (names_next_step(output), NEXT_STEP_WEIGHT, MISSING_NEXT_STEP),
        (is_courteous(output), COURTESY_WEIGHT, MISSING_COURTESY),
    )
    score = round(sum((weight for met, weight, _ in checks if met), 0.0), 2)
    missing = [feedback for met, _, feedback in checks if not met]
    if missing:
        return score, " ".join(missing)
    return score, f"Meets the checklist: the {policy.label} policy, a next step, courtesy."
