"""The bundled customer messages the traffic generator replays: eight per intent, phrased the
way customers write (some curt, some long, one misspelt), each with its intent and segment."""

from __future__ import annotations

from dataclasses import dataclass

from examples.customer_care.policies import BY_INTENT


@dataclass(frozen=True)
class Message:
    text: str
    intent: str

    @property
    def segment(self) -> str:
        return BY_INTENT[self.intent].segment


_WRITTEN = {
    "track_order": (
        "Where is my order? I placed it last Tuesday.",
        "Can you tell me when my package will arrive?",
        "My parcel still hasn't shipped, what's going on?",
        "How do I track my order?",
        "It's been a week and my delivery is nowhere to be seen.",
        "Has order 48213 left the warehouse yet?",
        "I never got a tracking number for my order.",
        "wen will my shoes be deliverd??",
    ),
    "cancel": (
        "I want to cancel my order.",
        "Please cancel the jacket I ordered this morning.",
        "I changed my mind, can I still call off my purchase?",
        "How do I cancel an order I placed by mistake?",
        "Is there a fee if I cancel before it ships?",
        "Stop my order please, I picked the wrong size.",
        "Can I cancel just one item from my order?",
        "I'd like to cancel my purchase from yesterday.",
    ),
    "refund": (
        "When will I get my refund?",
        "I returned the boots two weeks ago and still have no money back.",
        "How long do refunds take?",
        "Will my refund go to my credit card or to store credit?",
        "I was charged for an order I cancelled, I want my money back.",
        "Where is my refund? It's been ages.",
        "Can I get a refund for a damaged item?",
        "You charged me twice, please refund one of the payments.",
    ),
    "escalation": (
        "I want to speak to a human, not a bot.",
        "Let me talk to a real person please.",
        "This is the third time I'm writing. Get me a manager.",
        "Can I speak with a supervisor about my complaint?",
        "Your bot is useless, I need an actual agent.",
        "How do I reach someone from your team directly?",
        "I want to escalate my case.",
        "Is there a person I can talk to about a problem with my refund?",
    ),
    "general": (
        "What are your opening hours?",
        "Are you open on weekends?",
        "How can I contact customer support?",
        "Is this chat available at night?",
        "Do you have a phone number I can call?",
        "Hi, I have a quick question.",
        "What's the best way to get help with my account?",
        "Can I message you on a Sunday?",
    ),
}

MESSAGES = tuple(Message(text, intent) for intent, texts in _WRITTEN.items() for text in texts)
BY_TEXT = {message.text: message for message in MESSAGES}
