"""How the task model runs a candidate on an event's inputs: the prompt's `task.messages`
template from CONFIG_FILE, with `{name}` placeholders for component names and input keys.
Braces that name neither are left as they are, so prompts may contain JSON examples."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


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


def task_version(model: str, api_base: str | None, task: Mapping[str, Any] | None) -> str:
    """`<model>#<12 hex>` over everything that changes what a replay answers: the task model,
    where it is served, and the task template. Half of an evaluation's cache key."""
    path = json.dumps(
        {"model": model, "api_base": api_base, "task": task}, sort_keys=True, default=str
    )
    return f"{model[:110]}#{hashlib.sha256(path.encode()).hexdigest()[:12]}"
