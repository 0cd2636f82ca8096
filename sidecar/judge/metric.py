"""Code metrics: a function of the team's own (`package.module:function`, named in a prompt's
`judge` block) that scores a reply and says why, used instead of the LLM judge or averaged
with it. It is imported when the config is loaded, so a typo stops start-up in one line; the
current working directory is importable, because the sidecar and the demo run from the repo
root that holds the metric. Calling it never raises anything but `MetricFailed`, an
`InvalidReply`, so a broken metric fails one judgment (kept and retried like a judge error)
and never a worker. Its fingerprint hashes its source (its module and the modules of its own
package that it imports), so editing the metric or the facts it checks starts a new judge
version instead of mixing old and new scores.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import numbers
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType

from sidecar.errors import ConfigError
from sidecar.judge.verdict import MAX_FEEDBACK_CHARS, InvalidReply, Verdict, Winner

METRIC_VERSION = "metric-v1"  # how a result is read and blended; part of every judge version
REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_SCORE_SLACK = 1e-9  # float sums such as 0.1 * 3 + 0.7 land a hair above 1.0
_PREVIEW_CHARS = 80

MetricFunction = Callable[[dict[str, str], str], object]


class MetricFailed(InvalidReply):
    """The code metric raised, took too long, or returned something other than
    (score in 0..1, feedback str); the message names the metric and what it did."""


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _preview(value: object) -> str:
    return _one_line(repr(value), _PREVIEW_CHARS)


@dataclass(frozen=True)
class CodeMetric:
    """A loaded metric: `reference` as configured, `fingerprint` the sha256 of its source
    (`_fingerprint`; empty when no source can be read, e.g. a compiled extension)."""

    reference: str
    function: MetricFunction
    fingerprint: str

    async def score(self, inputs: Mapping[str, str], output: str, timeout_s: float) -> Verdict:
        """The metric's verdict on one reply; a sync metric runs in a worker thread so a slow
        one does not hold up the event loop."""
        try:
            if inspect.iscoroutinefunction(self.function):
                call = self.function(dict(inputs), output)
            else:
                call = asyncio.to_thread(self.function, dict(inputs), output)
            result = await asyncio.wait_for(call, timeout_s)
        except TimeoutError:
            raise MetricFailed(
                f"metric {self.reference} did not answer within {timeout_s:g}s"
            ) from None
        except Exception as exc:
            problem = _one_line(f"{type(exc).__name__}: {exc}")
            raise MetricFailed(f"metric {self.reference} raised {problem}") from exc
        return read_result(self.reference, result)


def read_result(reference: str, result: object) -> Verdict:
    """`(score, feedback)` (a tuple or list) as a Verdict; anything else is MetricFailed."""
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise MetricFailed(
            f"metric {reference} returned {_preview(result)}, not a (score, feedback) pair"
        )
    raw, feedback = result
    score = float(raw) if isinstance(raw, numbers.Real) and not isinstance(raw, bool) else math.nan
    if not -_SCORE_SLACK <= score <= 1 + _SCORE_SLACK:  # NaN fails this too
        raise MetricFailed(f"metric {reference} returned the score {_preview(raw)}, not 0..1")
    if not isinstance(feedback, str):
        raise MetricFailed(
            f"metric {reference} returned the feedback {_preview(feedback)}, not a string"
        )
    return Verdict(min(1.0, max(0.0, score)), feedback.strip()[:MAX_FEEDBACK_CHARS])


def blend(judged: Verdict, checks: Verdict) -> Verdict:
    """The LLM judge's verdict and the metric's, weighed equally, both reasons kept."""
    return Verdict(
        (judged.score + checks.score) / 2,
        f"judge: {judged.feedback} | checks: {checks.feedback}",
    )


def blend_winners(judged: Winner, checks: Winner) -> Winner:
    """Pairwise, the same equal weighing: a side wins when one says so and the other does not
    disagree (agreeing, or a tie); opposite picks cancel to a tie."""
    vote = {"a": 1, "b": -1, "tie": 0}
    total = vote[judged] + vote[checks]
    return "a" if total > 0 else "b" if total < 0 else "tie"


def _importable_cwd() -> None:
    """The working directory joins the import path last, so installed packages still win."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _imports(module: ModuleType, source: str) -> set[str]:
    """The absolute names of the modules `source` imports (relative imports resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            relative = "." * node.level + (node.module or "")
            try:
                base = importlib.util.resolve_name(relative, module.__package__ or "")
            except ImportError:  # inside a function never run: it cannot decide a score
                continue
            names.add(base)  # and each imported name, in case it is a submodule
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _fingerprint(module: ModuleType) -> str:
    """sha256 over the source of the metric's module and of the modules of its own top-level
    package that it imports, transitively (its policy facts, its helpers): the code that
    decides its scores. Libraries and files read at run time are not covered."""
    top = module.__name__.partition(".")[0]
    sources: dict[str, str] = {}
    seen: set[str] = set()
    pending = [module.__name__]
    while pending:
        name = pending.pop()
        current = sys.modules.get(name)
        if name in seen or current is None:
            continue
        seen.add(name)
        try:
            source = inspect.getsource(current)
        except (OSError, TypeError):  # a builtin, a compiled extension, a namespace package
            continue
        sources[name] = source
        pending.extend(n for n in _imports(current, source) if n.partition(".")[0] == top)
    if not sources:
        return ""
    return hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()


def _import(reference: str) -> tuple[ModuleType, object]:
    module_name, attribute = reference.split(":")
    _importable_cwd()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {reference}: {_one_line(str(exc))}") from None
    except Exception as exc:  # the module's own code failed as it was imported
        problem = _one_line(f"{type(exc).__name__}: {exc}")
        raise ConfigError(f"cannot import {reference}: {problem}") from None
    if not hasattr(module, attribute):
        raise ConfigError(f"cannot import {reference}: {module_name} has no {attribute!r}")
    return module, getattr(module, attribute)


def load_metric(reference: str) -> CodeMetric:
    """Import `package.module:function` and check it can be called as f(inputs, output);
    ConfigError in one line otherwise."""
    if not REFERENCE.fullmatch(reference):
        raise ConfigError(f"must look like package.module:function, not {reference!r}")
    module, function = _import(reference)
    if not callable(function):
        raise ConfigError(f"{reference} is not callable (it is a {type(function).__name__})")
    try:
        inspect.signature(function).bind({}, "")
    except TypeError as exc:
        raise ConfigError(f"{reference} must take (inputs, output): {exc}") from None
    except ValueError:
        pass  # a builtin without a readable signature: its first call will tell
    return CodeMetric(reference, function, _fingerprint(module))
