"""Traffic is data, not instructions. A proposal that copies a long span of user text (it may
carry someone's data, or an injected instruction) is refused before it is scored; one that adds
a shorter instruction found only in traffic gets a flag, shown with the candidate, and is never
bred from nor proposed, so a person looks twice before it goes anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

COPY_SPAN_CHARS = 40
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_MIN_INSTRUCTION_WORDS = 4


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def copied_span(
    candidate: str, traffic: Iterable[str], length: int = COPY_SPAN_CHARS, already: str = ""
) -> str | None:
    """The first span of at least `length` characters of some traffic text found verbatim
    (case and spacing aside) in `candidate` and not `already` in its parent's text, or None."""
    text = _normal(candidate)
    if len(text) < length:
        return None
    before = _normal(already)
    shingles = {text[i : i + length] for i in range(len(text) - length + 1)}
    shingles = {shingle for shingle in shingles if shingle not in before}
    for source in traffic:
        other = _normal(source)
        for i in range(len(other) - length + 1):
            if other[i : i + length] in shingles:
                return other[i : i + length]
    return None


def instructions_from_traffic(candidate: str, parent: str, traffic: Iterable[str]) -> list[str]:
    """Sentences new in `candidate` (not in its parent) that appear in traffic text: an
    instruction a user typed, now part of the prompt."""
    before = _normal(parent)
    corpus = [_normal(text) for text in traffic]
    found = []
    for match in _SENTENCE.finditer(candidate):
        sentence = _normal(match.group(0)).strip(" .!?")
        if len(sentence.split()) < _MIN_INSTRUCTION_WORDS or sentence in before:
            continue
        if any(sentence in text for text in corpus):
            found.append(sentence)
    return found


def flags_for(components: dict[str, str], parent: dict[str, str], traffic: list[str]) -> list[str]:
    """Why a person should look twice at this candidate, one short line per reason."""
    flags = []
    for name in sorted(components):
        text = components[name]
        span = copied_span(text, traffic)
        if span is not None:
            flags.append(f"copies user text into {name}: {span!r}")
        for sentence in instructions_from_traffic(text, parent.get(name, ""), traffic):
            flags.append(f"instruction found only in traffic, in {name}: {sentence!r}")
    return flags
