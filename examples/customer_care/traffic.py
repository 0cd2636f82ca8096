"""Example traffic of a small customer-care chatbot: what its serving app would emit."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

CONVERSATIONS = [
    (
        "billing",
        "Why was I charged twice this month?",
        "I'm sorry about that. I can see two charges; I've opened a refund for the duplicate.",
    ),
    (
        "billing",
        "Can I get an invoice for my last order?",
        "Sure, invoices are under Account > Orders > Invoice.",
    ),
    ("shipping", "Where is my order?", "Your order is on its way."),
    (
        "shipping",
        "My parcel says delivered but it's not here.",
        "Please check with your neighbours; if it is still missing tomorrow I will open a claim.",
    ),
    (
        "returns",
        "How do I return a jacket that doesn't fit?",
        "You can return it within 30 days from Account > Orders > Return.",
    ),
    ("returns", "I've changed my mind about my order.", "Okay."),
    (
        "account",
        "This is the third time I'm contacting you about my password!",
        "Please reset your password.",
    ),
    (
        "account",
        "How do I change my email address?",
        "Go to Account > Profile > Email and confirm the link we send you.",
    ),
]


def example_event(rng: random.Random, prompt_version: int = 1) -> dict[str, Any]:
    """One TrafficEvent as JSON-ready data, drawn from the example conversations."""
    segment, message, reply = rng.choice(CONVERSATIONS)
    return {
        "schema_version": 1,
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "prompt_name": "customer-care",
        "prompt_version": prompt_version,
        "timestamp": datetime.now(UTC).isoformat(),
        "inputs": {"user_message": message},
        "output": reply,
        "trace": {"model": "example", "latency_ms": rng.randint(300, 1500)},
        "metadata": {"segment": segment, "locale": "en"},
    }
