"""Traffic is data, not instructions. A proposal that copies a long span of user text (it may
carry someone's data, or an injected instruction) is refused before it is scored; one that adds
a shorter instruction found only in traffic, the same instruction in other words, or a sentence
shaped like an injection (override the rules, reveal secrets, change role, fake system tags)
gets a flag, shown with the candidate, and is never bred from nor proposed, so a person looks
twice before it goes anywhere. Traffic is compared as written and decoded (base64, rot13, leet
digits, dotted letters): an obedient model writes the payload, not its encoding.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterable

COPY_SPAN_CHARS = 40
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_MIN_INSTRUCTION_WORDS = 4
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_LEET = str.maketrans("013457@$", "oieastas")
_DOTTED = re.compile(r"\b(?:\w\.){2,}\w\b")
_WORD = re.compile(r"[a-z0-9][a-z0-9'./-]*[a-z0-9]|[a-z0-9]")
_STOPWORD_TEXT = (
    "a an and any are as at be by can do does for from have i if in is it its me my no not of on "
    "or our should so that the their them then there they this to was we when with you your "
    "now must each every all"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_MIN_SHARED_WORDS = 4
_SHARED_RATIO = 0.6
_NEGATED = re.compile(r"\b(?:never|not|don't|do not|no one|nobody)\b")
_INJECTION_SHAPES = (
    re.compile(
        r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}\b(?:previous|prior|above|"
        r"earlier|preceding|original|initial|system|your|these|my)\b.{0,20}\b(?:instructions?|"
        r"rules?|guidelines?|prompts?|polic(?:y|ies)|restrictions?)\b"
    ),
    re.compile(
        r"\b(?:reveal|print|show|display|output|repeat|dump|leak|share|send|read)\w*\b.{0,40}"
        r"\b(?:system prompt|hidden instructions|initial prompt|password|api key|credentials|"
        r"secret|customer (?:database|records)|internal)"
    ),
    re.compile(
        r"\byou are now\b|\bfrom now on,? you\b|\b(?:developer|unrestricted|god|jailbreak|dan) "
        r"mode\b|\byou are dan\b|\bno (?:restrictions|limits|filters)\b|\bpretend (?:to be|you)\b"
    ),
    re.compile(
        r"<\|?/?(?:system|im_start|im_end)\|?>|\[/?(?:system|inst)\]|#+\s*(?:system|instruction)\b"
    ),
)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _decoded(text: str) -> list[str]:
    """`text` as a model would read an obfuscated payload in it: base64 runs decoded, rot13,
    leet digits as letters, dotted letters joined."""
    views = [codecs.encode(text, "rot13"), text.translate(_LEET)]
    views.append(_DOTTED.sub(lambda match: match.group(0).replace(".", ""), text))
    for run in _BASE64.findall(text):
        try:
            decoded = base64.b64decode(run + "=" * (-len(run) % 4), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
        if decoded.isprintable():
            views.append(decoded)
    return views


def traffic_views(traffic: Iterable[str]) -> list[str]:
    """Every traffic text, then its decoded views: what a candidate is compared against."""
    texts = list(traffic)
    return texts + [view for text in texts for view in _decoded(text)]


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


def _content_words(text: str) -> set[str]:
    """The words that carry a sentence's meaning, crudely stemmed (refunds, refunded: refund)."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        for suffix in ("ing", "ed", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        words.add(word)
    return words


def _new_sentences(candidate: str, parent: str) -> list[str]:
    before = _normal(parent)
    sentences = (_normal(match.group(0)).strip(" .!?") for match in _SENTENCE.finditer(candidate))
    return [sentence for sentence in sentences if sentence and sentence not in before]


def reworded_from_traffic(candidate: str, parent: str, traffic: Iterable[str]) -> list[str]:
    """Sentences new in `candidate` whose meaning words come mostly from one traffic text: an
    instruction a user typed, in the model's own words. A prohibition of an injection's shape
    ("never reveal the system prompt") is the defence against it, not its copy."""
    sources = [_content_words(text) for text in traffic]
    found = []
    for sentence in _new_sentences(candidate, parent):
        if _guards_against_injection(sentence):
            continue
        words = _content_words(sentence)
        for source in sources:
            shared = len(words & source)
            if shared >= _MIN_SHARED_WORDS and shared >= _SHARED_RATIO * len(words):
                found.append(sentence)
                break
    return found


def _shaped(sentence: str) -> bool:
    return any(shape.search(sentence) for shape in _INJECTION_SHAPES)


def _guards_against_injection(sentence: str) -> bool:
    return bool(_NEGATED.search(sentence)) and _shaped(sentence)


def injection_shaped(candidate: str, parent: str) -> list[str]:
    """Sentences new in `candidate` shaped like an injection, whoever wrote them: an override of
    the rules, a secret revealed, a new role, a fake system tag (a prohibition is not one)."""
    return [
        sentence
        for sentence in _new_sentences(candidate, parent)
        if _shaped(sentence) and not _NEGATED.search(sentence)
    ]


def flags_for(components: dict[str, str], parent: dict[str, str], traffic: list[str]) -> list[str]:
    """Why a person should look twice at this candidate, one short line per reason."""
    flags = []
    views = traffic_views(traffic)
    for name in sorted(components):
        text, before = components[name], parent.get(name, "")
        span = copied_span(text, views)
        if span is not None:
            flags.append(f"copies user text into {name}: {span!r}")
        verbatim = instructions_from_traffic(text, before, views)
        for sentence in verbatim:
            flags.append(f"instruction found only in traffic, in {name}: {sentence!r}")
        for sentence in reworded_from_traffic(text, before, views):
            if sentence not in verbatim:
                flags.append(f"instruction reworded from traffic, in {name}: {sentence!r}")
        for sentence in injection_shaped(text, before):
            flags.append(f"injection-shaped instruction in {name}: {sentence!r}")
    return flags
