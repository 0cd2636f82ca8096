"""How a prompt's components become chat messages: the `task.messages` template of CONFIG_FILE,
with `{name}` placeholders for component names and input keys. The serving app (HotPrompt.render)
and the sidecar's replays use this one function, so a replay asks the model what production asked.
Braces that name neither are left as they are, so prompts may contain JSON examples."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def placeholders(task: Mapping[str, Any]) -> set[str]:
    """Every name the template's messages have a `{name}` for (components and input keys)."""
    return {
        name
        for message in task.get("messages") or []
        for name in _PLACEHOLDER.findall(str(message.get("content", "")))
    }


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def render_task(
    task: Mapping[str, Any] | None, components: Mapping[str, str], inputs: Mapping[str, str]
) -> list[dict[str, str]]:
    """The chat messages for one task call. Without a template: the components as the system
    message and the inputs, one `key: value` per line, as the user message."""
    values = {**inputs, **components}
    template = (task or {}).get("messages")
    if not template:
        system = "\n\n".join(components[name] for name in sorted(components))
        user = "\n".join(f"{key}: {value}" for key, value in inputs.items())
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return [
        {"role": str(message["role"]), "content": _fill(str(message["content"]), values)}
        for message in template
    ]
