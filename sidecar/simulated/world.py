"""What a simulated model answers by: a `World` is three rules (the task model, the judge and
the reflection model), and the server picks one per request. Worlds are plain classes, so a test
or an example can bring its own; `load_world` finds one by its `module:name`."""

from __future__ import annotations

import importlib
import re
from typing import Protocol

from sidecar.errors import ConfigError

REFLECTION_MARKERS = ("The instruction to improve", "I provided an assistant with the following")
"""Phrases that open a reflection request: our meta-prompt's, and the `gepa` library's."""

RULES = ("task", "judge", "reflect")
_FIRST_BLOCK = re.compile(r"```[^\n]*\n(.*?)\n```", re.S)


class World(Protocol):
    """The rules a simulated server answers by: a task model, a judge and a reflection model."""

    def task(self, system: str, user: str) -> str:
        """The reply to `user` under the system prompt `system`."""
        ...

    def judge(self, user_message: str, reply: str) -> tuple[float, str]:
        """A score in [0, 1] for `reply` to `user_message`, and feedback saying why."""
        ...

    def reflect(self, prompt: str) -> str:
        """A `Change:` line and the new instruction in a ``` block, from a reflection prompt."""
        ...


def instruction_and_evidence(prompt: str) -> tuple[str, str]:
    """(the instruction to improve, the rest of the prompt after it): any reflection meta-prompt
    that shows the current text in its first ``` block and the feedback after it (ours, or the
    `gepa` library's default template)."""
    block = _FIRST_BLOCK.search(prompt)
    if block is None:
        return "", prompt
    return block.group(1).strip(), prompt[block.end() :]


def load_world(spec: str) -> World:
    """The world `module:name` names: a class or factory called with no arguments. A ConfigError
    says what is wrong with the name."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--world {spec!r}: expected module:name, e.g. package.module:MyWorld")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--world {spec!r}: cannot import {module_name} ({exc})") from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"--world {spec!r}: {module_name} has no callable {attribute}")
    try:
        world: World = factory()
    except TypeError as exc:  # it needs arguments: a class or factory of another kind
        raise ConfigError(f"--world {spec!r}: {attribute}() failed: {exc}") from exc
    missing = [rule for rule in RULES if not callable(getattr(world, rule, None))]
    if missing:
        raise ConfigError(f"--world {spec!r}: not a World (no {', '.join(missing)})")
    return world
