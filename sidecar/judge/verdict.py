"""Reading the judge's replies defensively: models wrap JSON in prose or fences, return scores as
strings or out of range, or no JSON at all. Anything unusable is an `InvalidReply`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

MAX_FEEDBACK_CHARS = 2000
_SCORE_SLACK = 1e-3

Winner = Literal["a", "b", "tie"]


class InvalidReply(ValueError):
    """The judge answered, but not with a usable verdict; the message says what was wrong."""


@dataclass(frozen=True)
class Verdict:
    score: float
    feedback: str


def first_json_object(text: str, key: str | None = None) -> dict[str, Any]:
    """The first JSON object in `text` that has `key`, wherever it sits (bare, fenced, or after
    prose); failing that, the first JSON object at all."""
    stripped = text.strip()
    try:
        value = json.loads(stripped)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    start = stripped.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(stripped, start)
        except ValueError:
            start = stripped.find("{", start + 1)
            continue
        if isinstance(value, dict):
            if key is None or key in value:
                return value
            found.append(value)
        start = stripped.find("{", end)
    if found:
        return found[0]
    preview = " ".join(stripped.split())[:80]
    raise InvalidReply(f"no JSON object in the reply: {preview!r}")


def _feedback(obj: dict[str, Any]) -> str:
    feedback = obj.get("feedback")
    if not isinstance(feedback, str) or not feedback.strip():
        raise InvalidReply("feedback is missing or empty")
    return feedback.strip()[:MAX_FEEDBACK_CHARS]


def parse_verdict(text: str) -> Verdict:
    """`{"score": 0..1, "feedback": "..."}`; a score a hair outside 0..1 is clamped."""
    obj = first_json_object(text, "score")
    raw = obj.get("score")
    if isinstance(raw, bool) or raw is None:
        raise InvalidReply(f"score is not a number: {raw!r}")
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise InvalidReply(f"score is not a number: {raw!r}") from None
    if not math.isfinite(score) or not -_SCORE_SLACK <= score <= 1 + _SCORE_SLACK:
        raise InvalidReply(f"score {raw!r} is outside 0..1")
    return Verdict(min(1.0, max(0.0, score)), _feedback(obj))


def parse_pairwise(text: str) -> tuple[str, str]:
    """`{"winner": "A"|"B"|"tie", "feedback": "..."}` → (winner, feedback)."""
    obj = first_json_object(text, "winner")
    winner = str(obj.get("winner", "")).strip().upper()
    if winner not in ("A", "B", "TIE"):
        raise InvalidReply(f"winner must be A, B or tie, not {obj.get('winner')!r}")
    return ("tie" if winner == "TIE" else winner), _feedback(obj)


def combine_orders(first: str, second: str) -> Winner:
    """Who won, from the same pair judged twice: first with (a, b) shown as (A, B), then swapped.

    A win counts only when both orders agree, which cancels a judge's position bias.
    """
    first_pick: Winner = "a" if first == "A" else "b" if first == "B" else "tie"
    second_pick: Winner = "b" if second == "A" else "a" if second == "B" else "tie"
    return first_pick if first_pick == second_pick else "tie"
