"""A deterministic corpus of malformed traffic records, each paired with a valid event, drawn
by hypothesis for the R1 fuzzing test.

Each malformed record has exactly one defect, so the reason the sidecar must give is known in
advance. The corpus is drawn by running a @given function `size` times under a fixed @seed
with no example database and only the generate phase: the clean way to take many diverse,
reproducible examples from a strategy (`.example()` is for the REPL, and `find` shrinks to the
simplest example).
"""

from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from sidecar.events import MAX_EVENT_BYTES
from sidecar.ingest.validation import MAX_PROMPT_VERSION

REQUIRED = ("schema_version", "event_id", "prompt_name", "prompt_version", "timestamp")
REQUIRED += ("inputs", "output")
FIELDS = (*REQUIRED, "trace", "metadata")
PROMPT_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Malformed:
    """A record the sidecar must dead-letter, and the reason code it must give."""

    reason: str
    value: bytes | None
    key: bytes | None
    headers: Headers


@dataclass(frozen=True)
class Pair:
    bad: Malformed
    good: dict[str, Any]  # a valid event; the corpus gives each a unique id


storable_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
short_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30
)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | short_text
)
json_tree = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(short_text, children, max_size=3)
    ),
    max_leaves=12,
)


aware_times = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
    st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31)),
    st.integers(-14 * 60 + 1, 14 * 60 - 1),
)
"""RFC 3339 times: offsets in whole minutes, UTC within years 1-9999."""


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """Any event the sidecar must store: odd but legal text, numbers and nesting."""
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4)),
        "prompt_name": draw(st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True)),
        "prompt_version": draw(st.integers(1, MAX_PROMPT_VERSION)),
        "timestamp": draw(aware_times),
        "inputs": draw(st.dictionaries(short_text, storable_text, max_size=4)),
        "output": draw(storable_text),
    }
    if draw(st.booleans()):
        event["trace"] = draw(st.dictionaries(short_text, json_tree, max_size=4))
    if draw(st.booleans()):
        event["metadata"] = draw(st.dictionaries(short_text, json_tree, max_size=4))
    if draw(st.booleans()):
        event[draw(short_text.filter(lambda k: k not in FIELDS))] = draw(json_tree)
    return event


def encoded(event: Any) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


WRONG_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.integers() | st.text(max_size=40).filter(lambda t: not _is_uuid(t)),
    "prompt_name": st.just("")
    | st.just("x" * 201)
    | st.text(min_size=1, max_size=20).filter(lambda t: not PROMPT_NAME.fullmatch(t))
    | st.integers(),
    "prompt_version": st.integers(max_value=0)
    | st.integers(min_value=MAX_PROMPT_VERSION + 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.text(max_size=5),
    "timestamp": st.datetimes().map(lambda d: d.isoformat()) | st.integers() | st.text(max_size=20),
    "inputs": st.lists(short_text, max_size=3)
    | st.dictionaries(short_text, st.integers() | st.none(), min_size=1, max_size=3)
    | short_text,
    "output": st.none() | st.integers() | st.lists(short_text, max_size=2),
    "trace": short_text | st.lists(st.integers(), max_size=3) | st.integers(),
    "metadata": short_text | st.booleans(),
}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


KINDS = ("empty", "not_utf8", "not_json", "not_object", "schema", "missing", "wrong_type")
KINDS += ("unstorable",)


@st.composite
def malformed(draw: st.DrawFn, valid: dict[str, Any], kind: str) -> tuple[str, bytes | None]:
    """One defect of the given kind (every reason code the validator knows) applied to
    `valid`; returns the reason the sidecar must give, and the record's value."""
    if kind == "empty":
        return "empty", draw(st.sampled_from([None, b""]))
    if kind == "not_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"]))
        return "not_utf8", draw(st.binary(max_size=40)) + bad + draw(st.binary(max_size=40))
    if kind == "not_json":
        text = json.dumps(valid, ensure_ascii=False)
        return "not_json", draw(
            st.sampled_from(
                [
                    text[: draw(st.integers(1, len(text) - 1))].encode(),
                    b"<" + draw(short_text).encode(),
                    b"[" * draw(st.integers(1000, 20000)),
                    text.replace('"', "'").encode(),
                ]
            )
        )
    if kind == "not_object":
        top = st.lists(json_tree, max_size=3) | json_leaf
        return "not_object", encoded(draw(top))
    if kind == "schema":
        version = draw(st.integers().filter(lambda v: v != 1) | st.just(True) | short_text)
        return "unsupported_schema_version", encoded({**valid, "schema_version": version})
    if kind == "missing":
        dropped = draw(st.sets(st.sampled_from(REQUIRED), min_size=1))
        return "missing_field", encoded({k: v for k, v in valid.items() if k not in dropped})
    if kind == "wrong_type":
        field = draw(st.sampled_from(sorted(WRONG_VALUES)))
        return "wrong_type", encoded({**valid, field: draw(WRONG_VALUES[field])})
    return _unstorable(draw, valid)


def _unstorable(draw: st.DrawFn, valid: dict[str, Any]) -> tuple[str, bytes]:
    """What the schema allows and a database refuses (the bug R1 found)."""
    where = draw(st.sampled_from(["output", "inputs", "metadata", "nan"]))
    if where == "nan":
        number = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        return "not_json", json.dumps({**valid, "metadata": {"score": number}}).encode()
    text = draw(short_text) + "\x00" + draw(short_text)
    changed = {"output": text, "inputs": {text: "x"}, "metadata": {"note": text}}[where]
    return "wrong_type", encoded({**valid, where: changed})


def oversized(valid: dict[str, Any], extra: int) -> bytes:
    """A valid event padded to `extra` bytes over the limit."""
    size = len(encoded({**valid, "output": ""}))
    return encoded({**valid, "output": "x" * (MAX_EVENT_BYTES - size + extra)})


headers = st.lists(
    st.tuples(
        st.text(st.characters(exclude_categories=("Cs",)), max_size=20), st.binary(max_size=64)
    ),
    max_size=3,
)


@st.composite
def pairs(draw: st.DrawFn, kind: str) -> Pair:
    """A malformed record with an arbitrary key and headers, and a valid event keyed by its id."""
    good = draw(valid_events())
    reason, value = draw(malformed(draw(valid_events()), kind))
    bad = Malformed(reason, value, draw(st.none() | st.binary(max_size=64)), draw(headers))
    return Pair(bad, good)


def corpus(size: int, fixed_seed: int) -> list[Pair]:
    """At least `size` pairs, drawn deterministically (the same for the same seed and
    hypothesis version). Each example is one pair of every kind of defect, since hypothesis
    favours the first of a choice: drawn from `sampled_from(KINDS)`, half were "empty"."""
    drawn: list[Pair] = []

    @seed(fixed_seed)
    @settings(
        database=None,
        max_examples=-(-size // len(KINDS)),
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.tuples(*(pairs(kind) for kind in KINDS)))
    def collect(one_of_each: tuple[Pair, ...]) -> None:
        drawn.extend(one_of_each)

    collect()
    ids = random.Random(fixed_seed)
    for pair in drawn:  # hypothesis repeats simple ids; a repeated id is a duplicate, not a loss
        pair.good["event_id"] = str(uuid.UUID(int=ids.getrandbits(128), version=4))
    return drawn
