"""parse_event: every reason code, with a concrete malformed record for each."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.events import MAX_EVENT_BYTES, TrafficEvent
from sidecar.ingest.validation import Reason, Rejection, parse_event

EVENT_ID = "6f9619ff-8b86-4011-b42d-00c04fc964ff"
PROMPT = "customer-care"
REQUIRED = (
    "schema_version",
    "event_id",
    "prompt_name",
    "prompt_version",
    "timestamp",
    "inputs",
    "output",
)
_DROP = object()


def event(**changes: Any) -> dict[str, Any]:
    """A valid event dict; pass `field=_DROP` to remove a field, anything else to replace it."""
    doc: dict[str, Any] = {
        "schema_version": 1,
        "event_id": EVENT_ID,
        "prompt_name": PROMPT,
        "prompt_version": 3,
        "timestamp": "2024-05-01T12:00:00Z",
        "inputs": {"user_message": "Where is my order?"},
        "output": "Your order ships tomorrow.",
    }
    for key, value in changes.items():
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode("utf-8")


def reject(value: bytes | None) -> Rejection:
    result = parse_event(value)
    assert isinstance(result, Rejection), f"expected a Rejection, got {result!r}"
    assert "\n" not in result.detail
    assert result.detail
    return result


# --- valid events -------------------------------------------------------------------------


def test_valid_event_parses() -> None:
    result = parse_event(encode(event()))
    assert isinstance(result, TrafficEvent)
    assert result.schema_version == 1
    assert result.event_id == uuid.UUID(EVENT_ID)
    assert result.prompt_name == PROMPT
    assert result.prompt_version == 3
    assert result.timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert result.timestamp.tzinfo is not None
    assert result.inputs == {"user_message": "Where is my order?"}
    assert result.output == "Your order ships tomorrow."
    assert result.trace is None
    assert result.metadata is None


def test_design_doc_example_parses() -> None:
    doc = event(
        trace={
            "model": "m",
            "latency_ms": 812,
            "tokens": {"prompt": 120, "completion": 40},
            "steps": [],
        },
        metadata={"segment": "billing", "locale": "en"},
    )
    result = parse_event(encode(doc))
    assert isinstance(result, TrafficEvent)
    assert result.trace == doc["trace"]
    assert result.metadata == {"segment": "billing", "locale": "en"}
    assert result.segment == "billing"


def test_trace_and_metadata_may_be_null() -> None:
    result = parse_event(encode(event(trace=None, metadata=None)))
    assert isinstance(result, TrafficEvent)
    assert result.trace is None
    assert result.metadata is None


def test_unknown_top_level_fields_are_ignored() -> None:
    result = parse_event(encode(event(extra_field={"x": [1, 2]}, another=7)))
    assert isinstance(result, TrafficEvent)
    assert not hasattr(result, "extra_field")
    assert "extra_field" not in result.model_dump()


def test_empty_inputs_object_is_valid() -> None:
    result = parse_event(encode(event(inputs={})))
    assert isinstance(result, TrafficEvent)
    assert result.inputs == {}


def test_non_ascii_text_is_kept() -> None:
    raw = json.dumps(event(output="Très bien — 注文"), ensure_ascii=False).encode("utf-8")
    result = parse_event(raw)
    assert isinstance(result, TrafficEvent)
    assert result.output == "Très bien — 注文"


def test_timestamp_offset_is_kept() -> None:
    result = parse_event(encode(event(timestamp="2024-05-01T14:00:00+02:00")))
    assert isinstance(result, TrafficEvent)
    assert result.timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_event_id_is_normalised() -> None:
    upper = parse_event(encode(event(event_id=EVENT_ID.upper())))
    lower = parse_event(encode(event(event_id=EVENT_ID)))
    assert isinstance(upper, TrafficEvent)
    assert isinstance(lower, TrafficEvent)
    assert upper.event_id == lower.event_id == uuid.UUID(EVENT_ID)
    assert upper.key == lower.key == EVENT_ID.encode()


def test_exactly_max_bytes_is_not_too_large() -> None:
    shell = encode(event(output=""))
    raw = encode(event(output="x" * (MAX_EVENT_BYTES - len(shell))))
    assert len(raw) == MAX_EVENT_BYTES
    assert isinstance(parse_event(raw), TrafficEvent)


# --- empty / too_large / not_utf8 / not_json / not_object -------------------------------


@pytest.mark.parametrize("value", [None, b""])
def test_empty(value: bytes | None) -> None:
    result = reject(value)
    assert result.reason == "empty"
    assert result.prompt_hint is None


def test_too_large() -> None:
    shell = encode(event(output=""))
    raw = encode(event(output="x" * (MAX_EVENT_BYTES - len(shell) + 1)))
    assert len(raw) == MAX_EVENT_BYTES + 1
    result = reject(raw)
    assert result.reason == "too_large"
    assert str(MAX_EVENT_BYTES + 1) in result.detail
    assert str(MAX_EVENT_BYTES) in result.detail


def test_too_large_is_checked_before_decoding() -> None:
    result = reject(b"\xff" * (MAX_EVENT_BYTES + 10))
    assert result.reason == "too_large"


@pytest.mark.parametrize(
    ("value", "position"),
    [(b"\xff\xfe{", 0), (b'{"a": "\xc3"}', 7), (b'{"prompt_name": "x\x80"}', 18)],
)
def test_not_utf8(value: bytes, position: int) -> None:
    result = reject(value)
    assert result.reason == "not_utf8"
    assert f"byte {position}" in result.detail
    assert result.prompt_hint is None


@pytest.mark.parametrize(
    "value",
    [b"{", b"not json", b" ", b'{"schema_version": 1,}', b"{'a': 1}", b"{}{}", b"\x00"],
)
def test_not_json(value: bytes) -> None:
    result = reject(value)
    assert result.reason == "not_json"
    assert result.prompt_hint is None


def test_not_json_detail_is_one_line() -> None:
    result = reject(b'{\n"a":\n\n')
    assert result.reason == "not_json"
    assert "\n" not in result.detail
    assert len(result.detail) <= 300


@pytest.mark.parametrize("value", [b"[1]", b'"x"', b"1", b"null", b"true", b"[]", b"3.5"])
def test_not_object(value: bytes) -> None:
    result = reject(value)
    assert result.reason == "not_object"
    assert result.prompt_hint is None


# --- unsupported_schema_version -------------------------------------------------------


@pytest.mark.parametrize("version", [2, 0, -1, "1", "2", None, [1], {"v": 1}])
def test_unsupported_schema_version(version: Any) -> None:
    result = reject(encode(event(schema_version=version)))
    assert result.reason == "unsupported_schema_version"
    assert "schema_version" in result.detail
    assert result.prompt_hint == PROMPT


def test_boolean_schema_version_is_not_version_1() -> None:
    # JSON `true` is not the integer 1; TrafficEvent is strict for every other field.
    result = reject(encode(event(schema_version=True)))
    assert result.reason == "unsupported_schema_version"


def test_unsupported_schema_version_wins_over_other_errors() -> None:
    result = reject(encode(event(schema_version=2, output=5, inputs=_DROP)))
    assert result.reason == "unsupported_schema_version"


# --- missing_field ----------------------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_field(field: str) -> None:
    result = reject(encode(event(**{field: _DROP})))
    assert result.reason == "missing_field"
    assert result.detail.startswith(f"{field}:")
    expected_hint = None if field == "prompt_name" else PROMPT
    assert result.prompt_hint == expected_hint


def test_empty_object_is_missing_field() -> None:
    result = reject(b"{}")
    assert result.reason == "missing_field"
    assert result.prompt_hint is None


# --- wrong_type --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("prompt_version", "3", "prompt_version"),
        ("prompt_version", 0, "prompt_version"),
        ("prompt_version", -4, "prompt_version"),
        ("prompt_version", 3.5, "prompt_version"),
        ("prompt_version", True, "prompt_version"),
        ("inputs", {"user_message": 5}, "inputs.user_message"),
        ("inputs", {"user_message": None}, "inputs.user_message"),
        ("inputs", {"user_message": ["a"]}, "inputs.user_message"),
        ("inputs", ["Where is my order?"], "inputs"),
        ("inputs", "Where is my order?", "inputs"),
        ("output", 42, "output"),
        ("output", None, "output"),
        ("output", {"text": "x"}, "output"),
        ("event_id", "not-a-uuid", "event_id"),
        ("event_id", 12345, "event_id"),
        ("timestamp", "2024-05-01T12:00:00", "timestamp"),
        ("timestamp", "yesterday", "timestamp"),
        ("timestamp", 1714564800, "timestamp"),
        ("trace", [1, 2], "trace"),
        ("metadata", "billing", "metadata"),
    ],
)
def test_wrong_type(field: str, value: Any, where: str) -> None:
    result = reject(encode(event(**{field: value})))
    assert result.reason == "wrong_type"
    assert result.detail.startswith(f"{where}:")
    assert result.prompt_hint == PROMPT


@pytest.mark.parametrize(
    "name", ["", "has space", "slash/name", "x" * 201, "ok\nnext", "ok\n", 7, None]
)
def test_bad_prompt_name_is_wrong_type_without_hint(name: Any) -> None:
    # The hint labels a metric and a header: a name that is not a valid prompt name is not used.
    result = reject(encode(event(prompt_name=name)))
    assert result.reason == "wrong_type"
    assert result.detail.startswith("prompt_name:")
    assert result.prompt_hint is None


@pytest.mark.parametrize("name", ["a", "A.b_c-9", "x" * 200])
def test_valid_prompt_name_is_the_hint(name: str) -> None:
    result = reject(encode(event(prompt_name=name, output=1)))
    assert result.reason == "wrong_type"
    assert result.prompt_hint == name


@pytest.mark.parametrize(
    ("changes", "reason", "where"),
    [
        ({"prompt_version": 2**31}, "wrong_type", "prompt_version"),
        ({"prompt_version": 10**30}, "wrong_type", "prompt_version"),
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, "wrong_type", "timestamp"),
        ({"timestamp": "9999-12-31T23:59:59-01:00"}, "wrong_type", "timestamp"),
        ({"output": "a\x00b"}, "wrong_type", "output"),
        ({"inputs": {"q\x00": "x"}}, "wrong_type", "inputs"),
        ({"trace": {"steps": [{"text": "\x00"}]}}, "wrong_type", "trace"),
        ({"metadata": {"score": float("nan")}}, "not_json", "metadata"),
        ({"trace": {"latency": [float("inf")]}}, "not_json", "trace"),
    ],
)
def test_values_a_database_refuses_are_rejected(
    changes: dict[str, Any], reason: Reason, where: str
) -> None:
    """Found by the R1 fuzzing: accepted, these failed every store of their batch (PostgreSQL
    has no NUL in text or jsonb, no NaN in jsonb, a 32-bit INTEGER; SQLite a 64-bit one; a
    time past year 9999 in UTC overflows either)."""
    result = reject(json.dumps(event(**changes)).encode())
    assert (result.reason, result.prompt_hint) == (reason, PROMPT)
    assert result.detail.startswith(f"{where}:")


def test_the_largest_storable_version_and_big_metadata_numbers_are_valid() -> None:
    edges = {"prompt_version": 2**31 - 1, "metadata": {"n": 10**40}}
    result = parse_event(encode(event(**edges, timestamp="9999-12-31T23:59:59+14:00")))
    assert isinstance(result, TrafficEvent)


def test_prompt_hint_is_read_even_when_other_fields_are_wrong() -> None:
    result = reject(encode({"prompt_name": "billing-bot", "output": 1}))
    assert result.prompt_hint == "billing-bot"


# --- never raises ------------------------------------------------------------------------

REASONS = set(get_args(Reason))


def check_outcome(result: object) -> None:
    assert isinstance(result, TrafficEvent | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert isinstance(result.detail, str)
        assert "\n" not in result.detail
        assert result.prompt_hint is None or isinstance(result.prompt_hint, str)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from([*REQUIRED, "trace", "metadata"]) | st.text(max_size=12)


@settings(database=None, max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_never_raises_on_arbitrary_bytes(value: bytes) -> None:
    check_outcome(parse_event(value))


@settings(database=None, max_examples=300, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=10))
def test_never_raises_on_arbitrary_dicts(doc: dict[str, Any]) -> None:
    check_outcome(parse_event(encode(doc)))


@settings(database=None, max_examples=300, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=4))
def test_never_raises_on_nearly_valid_events(changes: dict[str, Any]) -> None:
    doc = event()
    doc.update(changes)
    check_outcome(parse_event(encode(doc)))


@settings(database=None, max_examples=200, deadline=None)
@given(json_values)
def test_never_raises_on_arbitrary_json(value: Any) -> None:
    result = parse_event(encode(value))
    check_outcome(result)
    if not isinstance(value, dict):
        assert isinstance(result, Rejection)
        assert result.reason in {"not_object", "empty"}
