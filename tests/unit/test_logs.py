"""The JSON log line: one object per record with ts, level, logger, message, exc and extras."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from sidecar.logs import JsonFormatter

RFC3339_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("sidecar.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def formatted(made: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(made)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_record_is_one_object_with_the_agreed_keys() -> None:
    made = record("lag %d on %s", 12, "gepa.traffic")
    made.created = datetime(2026, 11, 28, 12, 0, 5, 123456, tzinfo=UTC).timestamp()
    assert formatted(made) == {
        "ts": "2026-11-28T12:00:05.123Z",
        "level": "WARNING",
        "logger": "sidecar.test",
        "message": "lag 12 on gepa.traffic",
    }


def test_the_timestamp_is_rfc3339_utc_with_milliseconds() -> None:
    assert RFC3339_UTC_MS.match(formatted(record("now"))["ts"])


def test_a_traceback_stays_inside_its_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    entry = formatted(made)
    assert entry["message"] == "failed"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].rstrip().endswith("ValueError: bad\nvalue")


def test_extras_are_kept_and_never_replace_the_agreed_keys() -> None:
    entry = formatted(record("stored", prompt="customer-care", count=3, level="mine", ts=0))
    assert (entry["prompt"], entry["count"]) == ("customer-care", 3)
    assert (entry["level"], entry["message"]) == ("WARNING", "stored")
    assert RFC3339_UTC_MS.match(entry["ts"])


def test_values_json_cannot_hold_are_written_as_text() -> None:
    entry = formatted(record("odd", where={1, 2}.__class__, path=object))
    assert entry["where"] == "<class 'set'>"
    assert "object" in entry["path"]


def test_text_outside_ascii_is_kept() -> None:
    assert formatted(record("Grüße, 注文"))["message"] == "Grüße, 注文"
