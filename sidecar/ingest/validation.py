"""Decide whether a record's bytes are a TrafficEvent, and if not, say why in a few words.

Pure: no Kafka, no database. The reason codes are what operators see in the dead-letter header.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC
from typing import Literal

from pydantic import ValidationError

from sidecar.events import EVENT_SCHEMA_VERSION, MAX_EVENT_BYTES, TrafficEvent

_PROMPT_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
MAX_PROMPT_VERSION = 2**31 - 1
"""The store's INTEGER column (32-bit in PostgreSQL)."""

Reason = Literal[
    "too_large",
    "empty",
    "not_utf8",
    "not_json",
    "not_object",
    "unsupported_schema_version",
    "missing_field",
    "wrong_type",
]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record is not a valid event; `prompt_hint` labels the counter when it can be read."""

    reason: Reason
    detail: str
    prompt_hint: str | None = None


def parse_event(value: bytes | None) -> TrafficEvent | Rejection:
    """Validate one record value; never raises for bad input."""
    if value is None or len(value) == 0:
        return Rejection("empty", "record has no value")
    if len(value) > MAX_EVENT_BYTES:
        return Rejection("too_large", f"value is {len(value)} bytes, limit is {MAX_EVENT_BYTES}")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"byte {exc.start} is not UTF-8")
    try:
        event = TrafficEvent.model_validate_json(value)
    except ValidationError as exc:
        return _explain(exc, value)
    return _unstorable(event) or event


def _unstorable(event: TrafficEvent) -> Rejection | None:
    """Values the schema takes but the store refuses: a version past a 32-bit INTEGER, a time
    whose UTC is outside years 1-9999, a NUL character (PostgreSQL text and jsonb hold none),
    NaN or Infinity (not JSON; jsonb refuses them). Accepted, such an event would fail every
    store of its batch and stall ingest."""
    hint = event.prompt_name
    if event.prompt_version > MAX_PROMPT_VERSION:
        detail = f"prompt_version: must be at most {MAX_PROMPT_VERSION}"
        return Rejection("wrong_type", detail, hint)
    try:
        event.timestamp.astimezone(UTC)
    except OverflowError:
        return Rejection("wrong_type", "timestamp: out of range once in UTC", hint)
    fields = {
        "inputs": event.inputs,
        "output": event.output,
        "trace": event.trace,
        "metadata": event.metadata,
    }
    for name, field in fields.items():
        pending: list[object] = [field]
        while pending:
            item = pending.pop()
            if isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
            elif isinstance(item, str) and "\x00" in item:
                return Rejection("wrong_type", f"{name}: a string holds a NUL character", hint)
            elif isinstance(item, float) and not math.isfinite(item):
                return Rejection("not_json", f"{name}: NaN or Infinity is not JSON", hint)
    return None


def _explain(exc: ValidationError, text: bytes) -> Rejection:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    kind = first["type"]
    if kind == "json_invalid":
        return Rejection("not_json", _one_line(first["msg"]))
    if kind == "model_type":
        return Rejection("not_object", "top-level JSON value is not an object")
    hint = _prompt_hint(text)
    for error in errors:
        if error["loc"][:1] == ("schema_version",) and error["type"] != "missing":
            return Rejection(
                "unsupported_schema_version",
                f"schema_version must be {EVENT_SCHEMA_VERSION}",
                hint,
            )
    reason: Reason = "missing_field" if kind == "missing" else "wrong_type"
    where = ".".join(str(part) for part in first["loc"]) or "value"
    return Rejection(reason, _one_line(f"{where}: {first['msg']}"), hint)


def _prompt_hint(text: bytes) -> str | None:
    try:
        name = json.loads(text).get("prompt_name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and _PROMPT_NAME.fullmatch(name) else None


def _one_line(message: str) -> str:
    return " ".join(message.split())[:300]
