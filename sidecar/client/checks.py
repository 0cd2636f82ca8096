"""What the app hands the SDK at construction, checked there: a wrong name, template or rate is
a ConfigError at start-up, where a person sees it, rather than prompts or events that silently
never arrive."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from sidecar.errors import ConfigError
from sidecar.events import PromptName

_PROMPT_NAME: TypeAdapter[str] = TypeAdapter(PromptName)


def checked_name(name: object) -> str:
    """A prompt name as the wire schemas accept it (1-200 of A-Z a-z 0-9 . _ -)."""
    try:
        return _PROMPT_NAME.validate_python(name, strict=True)
    except ValidationError as exc:
        raise ConfigError(
            f"prompt name {name!r}: 1 to 200 characters of letters, digits, '.', '_' or '-'"
        ) from exc


def checked_template(template: object) -> list[dict[str, str]] | None:
    """A copy of a `task.messages` template: a list of {"role", "content"} strings."""
    if template is None:
        return None
    if isinstance(template, str | bytes) or not isinstance(template, Sequence):
        raise ConfigError("template: a list of {'role': …, 'content': …} messages")
    messages = []
    for index, message in enumerate(template):
        if not isinstance(message, Mapping) or not all(
            isinstance(message.get(field), str) for field in ("role", "content")
        ):
            raise ConfigError(f"template[{index}]: a message needs string 'role' and 'content'")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def checked_components(fallback: object) -> dict[str, str]:
    """A copy of the bundled fallback components (name -> text)."""
    if fallback is None:
        return {}
    if not isinstance(fallback, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in fallback.items()
    ):
        raise ConfigError("fallback: a dict of component name -> text, all strings")
    return dict(fallback)


def checked_positive(setting: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"{setting}: a positive number of seconds, not {value!r}")
    return float(value)


def checked_rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"sample_rate: a fraction from 0.0 to 1.0, not {value!r}")
    return float(value)


def checked_size(setting: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{setting}: a whole number of at least 1, not {value!r}")
    return value
