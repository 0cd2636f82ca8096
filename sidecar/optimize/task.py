"""What identifies the task path of a replay. The template itself is rendered by
`sidecar.client.template.render_task`, the function the serving app's SDK uses too."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sidecar.client.template import render_task

__all__ = ["render_task", "task_version"]


def task_version(model: str, api_base: str | None, task: Mapping[str, Any] | None) -> str:
    """`<model>#<12 hex>` over everything that changes what a replay answers: the task model,
    where it is served, and the task template. Half of an evaluation's cache key."""
    path = json.dumps(
        {"model": model, "api_base": api_base, "task": task}, sort_keys=True, default=str
    )
    return f"{model[:110]}#{hashlib.sha256(path.encode()).hexdigest()[:12]}"
