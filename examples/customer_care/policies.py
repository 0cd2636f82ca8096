"""The customer-care chatbot's policies: five intents, each with its segment and ONE concrete fact
the seed prompt ("You are a helpful customer care assistant.") does not know. A reply states a
fact when it holds one wording of each of the fact's terms, so a real model's paraphrase counts
too ("five business days" for "5 business days")."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9']+")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def normal(text: str) -> str:
    """Lower case, straight quotes, single spaces: what every keyword check compares against."""
    return " ".join(text.translate(_QUOTES).lower().split())


@dataclass(frozen=True)
class Policy:
    """One intent: how a message shows it, the fact a good reply states, and its next step."""

    intent: str
    label: str  # "the {label} policy", as the feedback names it
    segment: str
    fact: str  # a clause: "refunds go back to ..."
    terms: tuple[tuple[str, ...], ...]  # each a set of wordings; the fact needs one of each
    keywords: tuple[str, ...]  # word stems, or phrases with a space, that mark the intent
    vague: str  # what a reply says about it without the policy
    next_step: str

    @property
    def sentence(self) -> str:
        """The fact as a sentence, as the policy handbook (and a fixed prompt) writes it."""
        return self.fact[0].upper() + self.fact[1:] + "."

    def stated_in(self, text: str) -> bool:
        """Does `text` state this policy's fact (one wording of every term)?"""
        flat = normal(text)
        return all(any(wording in flat for wording in term) for term in self.terms)

    def hits(self, message: str) -> int:
        """How many of this intent's keywords the message uses."""
        flat = normal(message)
        words = _WORD.findall(flat)
        return sum(
            keyword in flat if " " in keyword else any(w.startswith(keyword) for w in words)
            for keyword in self.keywords
        )


def _policy(
    intent: str,
    label: str,
    segment: str,
    fact: str,
    *terms: str,
    keywords: str,
    vague: str,
    next_step: str,
) -> Policy:
    """A policy with each term written "wording | wording" and its keywords as one
    comma-separated string."""
    return Policy(
        intent,
        label,
        segment,
        fact,
        tuple(tuple(w.strip() for w in term.split("|")) for term in terms),
        tuple(k.strip() for k in keywords.split(",")),
        vague,
        next_step,
    )


POLICIES = (  # in priority order: a tie in keyword hits goes to the earlier intent
    _policy(
        "escalation",
        "escalation",
        "support",
        "a human agent can be reached 24/7 by replying 'agent'",
        "human agent | a human | real person",
        "24/7 | around the clock | any time | anytime",
        "'agent' | \"agent\"",
        keywords="human, person, manager, supervisor, complain, escalat, agent, speak, talk, "
        "someone, useless",
        vague="I understand you would like more help with this.",
        next_step="tell me if you would like me to pass this on.",
    ),
    _policy(
        "cancel",
        "cancellation",
        "account",
        "orders can be cancelled free of charge until they ship, from Account > Orders",
        "free of charge | for free | at no cost | no fee",
        "until they ship | until it ships | before they ship | before it ships",
        "account > orders | account → orders | account/orders",
        keywords="cancel, call off, changed my mind, stop my order",
        vague="I can help you with your cancellation.",
        next_step="reply here if the order has already left us.",
    ),
    _policy(
        "refund",
        "refund",
        "billing",
        "refunds go back to the original payment method within 5 business days",
        "original payment method | original payment | same card",
        "5 business days | five business days",
        keywords="refund, money back, charge, reimburs, return, paid",
        vague="I will look into your refund.",
        next_step="reply here if you do not see the money by then.",
    ),
    _policy(
        "track_order",
        "order tracking",
        "shipping",
        "orders ship within 2 business days and the tracking link is in the confirmation email",
        "2 business days | two business days",
        "tracking link",
        "confirmation email | confirmation e-mail | order confirmation",
        keywords="track, where, package, parcel, deliver, arriv, ship, warehouse, late",
        vague="I will check on your order for you.",
        next_step="reply with your order number if the link does not work.",
    ),
    _policy(
        "general",
        "support hours",
        "support",
        "support is open 24/7 in this chat",
        "24/7 | around the clock | 24 hours a day",
        "chat",
        keywords="hour, open, contact, support, chat, available, phone, question, help, "
        "weekend, sunday, night, call",
        vague="I am here to help with your question.",
        next_step="tell me what you need help with.",
    ),
)
BY_INTENT = {policy.intent: policy for policy in POLICIES}
GENERAL = BY_INTENT["general"]


def policy_for_keywords(message: str) -> Policy:
    """The intent whose keywords the message uses most (the earlier on a tie); general when it
    uses none."""
    best = max(POLICIES, key=lambda policy: (policy.hits(message), -POLICIES.index(policy)))
    return best if best.hits(message) else GENERAL
