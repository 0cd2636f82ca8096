"""Where the sidecar's log goes and how it reads: stderr, at LOG_LEVEL, as text for a person or
as JSON lines for a log pipeline (LOG_FORMAT).

A JSON line is one object: `ts` (RFC 3339, UTC, milliseconds), `level`, `logger`, `message`,
`exc` (the formatted traceback) when there is one, and the record's `extra` fields. A traceback
stays inside its line, so a pipeline never mistakes its lines for records of their own.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sidecar.optimize.redact import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("kafka", "uvicorn", "alembic", "apscheduler")
"""Libraries whose INFO lines are their own bookkeeping: shown from WARNING up."""

STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}
"""What every LogRecord carries; anything else on a record came from `extra`."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactPersonalData(logging.Filter):
    """User text reaches log lines inside exception messages (a judge's reply quoting the user
    in an InvalidReply, a provider's error echoing the prompt): every line written is redacted
    as traffic is before a model sees it (endpoints kept: an operator needs them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), locations=False)
        record.args = None
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, formatted
        if record.exc_text:
            record.exc_text = redact(record.exc_text, locations=False)
        return True


def stderr_handler(log_format: str = "text") -> logging.Handler:
    """The handler `log_to_stderr` installs: `log_format` (text|json) lines, PII redacted."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactPersonalData())
    return handler


def _rfc3339(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log_to_stderr(level: str = "INFO", log_format: str = "text") -> None:
    """Send every logger's records at `level` and above to stderr, formatted as `log_format`
    (text|json); replaces whatever handlers the root logger had. Python's warnings and
    uncaught exceptions are logged too, so nothing reaches stderr in another shape."""
    logging.basicConfig(level=level, handlers=[stderr_handler(log_format)], force=True)
    floor = max(logging.WARNING, logging.getLevelName(level))
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(floor)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("sidecar").critical("uncaught exception", exc_info=(kind, error, traceback))


def _log_uncaught_in_thread(hook: threading.ExceptHookArgs) -> None:
    if hook.exc_value is None or issubclass(hook.exc_type, SystemExit):
        return
    name = hook.thread.name if hook.thread is not None else "unknown"
    logging.getLogger("sidecar").error(
        "uncaught exception in thread %s",
        name,
        exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback),
    )


def current_log_setup() -> tuple[str, str]:
    """The level and format this process logs with, for a child process to log the same way."""
    root = logging.getLogger()
    json_lines = any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers)
    return logging.getLevelName(root.getEffectiveLevel()), "json" if json_lines else "text"
