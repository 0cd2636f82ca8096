"""Code metrics: loading `package.module:function` (one-line errors), calling it (a bad result or
a raise fails the judgment, never the caller), blending with the judge model, and versions."""

from __future__ import annotations

import asyncio
import importlib
import math
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import ConfigError
from sidecar.judge import rubric
from sidecar.judge.judge import Judge, judge_for, score_all
from sidecar.judge.metric import (
    CodeMetric,
    MetricFailed,
    blend,
    blend_winners,
    load_metric,
    read_result,
)
from sidecar.judge.rubric import judge_version
from sidecar.judge.verdict import InvalidReply, Verdict
from sidecar.llm.gateway import Gateway
from sidecar.settings import JudgeBlock, PromptSpec, load_settings
from tests.helpers import scaled

HERE = __name__  # this module, importable as the tests import it


def words_metric(inputs: dict[str, str], output: str) -> tuple[float, str]:
    """1.0 when the reply repeats a word of the question, else 0.0."""
    shared = set(inputs["user_message"].lower().split()) & set(output.lower().split())
    return (1.0, "echoes the question") if shared else (0.0, "ignores the question")


def raising_metric(inputs: dict[str, str], output: str) -> tuple[float, str]:
    raise ValueError(f"cannot read {output!r}")


async def async_metric(inputs: dict[str, str], output: str) -> tuple[float, str]:
    await asyncio.sleep(0)
    return 0.25, f"async on {output}"


def forget(name: str) -> None:
    """Drop a module and everything of its top-level package, so the next import reads disk."""
    top = name.partition(".")[0]
    for module in [m for m in sys.modules if m.partition(".")[0] == top]:
        del sys.modules[module]
    importlib.invalidate_caches()


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """write(source, name=None, folder="mods") -> an importable (dotted) module name, written
    under tmp_path/folder, which goes first on sys.path; forgotten after the test."""
    names: list[str] = []

    def write(source: str, name: str | None = None, folder: str = "mods") -> str:
        name = name or f"metric_{uuid.uuid4().hex[:10]}"
        path = tmp_path / folder / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path / folder))
        names.append(name)
        return name

    yield write
    for name in names:
        forget(name)


CHECKS = "def check(inputs, output):\n    return (1.0 if 'next step' in output else 0.0), 'ok'\n"


def metric_judge(reference: str, **settings: Any) -> Judge:
    return Judge(Gateway(load_settings(**settings)), None, metric=load_metric(reference))


# --- loading -------------------------------------------------------------------------------


def test_a_metric_is_loaded_with_its_source_fingerprint(write_module: Callable[..., str]) -> None:
    name = write_module(CHECKS)
    loaded = load_metric(f"{name}:check")
    assert loaded.reference == f"{name}:check"
    assert loaded.function({}, "next step: wait") == (1.0, "ok")
    assert len(loaded.fingerprint) == 64
    assert load_metric(f"{name}:check").fingerprint == loaded.fingerprint


def test_an_unresolvable_relative_import_in_a_function_does_not_stop_loading(
    write_module: Callable[..., str],
) -> None:
    source = CHECKS + "\n\ndef unused():\n    from ..elsewhere import thing\n    return thing\n"
    name = write_module(source)
    assert len(load_metric(f"{name}:check").fingerprint) == 64


def test_the_working_directory_is_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"metric_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(CHECKS)
    monkeypatch.chdir(tmp_path)
    path = [entry for entry in sys.path if entry not in ("", str(tmp_path))]
    monkeypatch.setattr(sys, "path", path)
    try:
        assert load_metric(f"{name}:check").function({}, "x") == (0.0, "ok")
        assert sys.path[-1] == str(tmp_path)  # last: installed packages still win
    finally:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "reference", ["checks", "checks:", ":check", "a..b:check", "a:b:check", "a.b:check()", ""]
)
def test_a_reference_of_the_wrong_shape_is_refused(reference: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_metric(reference)
    assert str(raised.value) == f"must look like package.module:function, not {reference!r}"


def test_a_missing_module_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigError) as raised:
        load_metric("no_such_package_here.checks:policy_metric")
    assert str(raised.value) == (
        "cannot import no_such_package_here.checks:policy_metric: "
        "No module named 'no_such_package_here'"
    )


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
        ("def check(inputs, output:\n    pass\n", "SyntaxError: "),
        ("import no_such_dependency_here\n", "No module named 'no_such_dependency_here'"),
        ("def other(inputs, output):\n    return 1.0, ''\n", "has no 'check'"),
    ],
)
def test_a_module_that_fails_to_import_is_one_line(
    write_module: Callable[..., str], source: str, problem: str
) -> None:
    name = write_module(source)
    with pytest.raises(ConfigError) as raised:
        load_metric(f"{name}:check")
    message = str(raised.value)
    assert message.startswith(f"cannot import {name}:check: ")
    assert problem in message
    assert "\n" not in message


def test_something_not_callable_is_refused(write_module: Callable[..., str]) -> None:
    name = write_module("check = 0.5\n")
    with pytest.raises(ConfigError) as raised:
        load_metric(f"{name}:check")
    assert str(raised.value) == f"{name}:check is not callable (it is a float)"


@pytest.mark.parametrize(
    "signature", ["(output)", "(inputs, output, extra)", "(*, inputs, output)"]
)
def test_a_function_that_cannot_take_inputs_and_output_is_refused(
    write_module: Callable[..., str], signature: str
) -> None:
    name = write_module(f"def check{signature}:\n    return 1.0, ''\n")
    with pytest.raises(ConfigError, match=rf"^{name}:check must take \(inputs, output\): "):
        load_metric(f"{name}:check")


def test_a_builtin_without_source_or_signature_loads_and_fails_when_called() -> None:
    builtin = load_metric("builtins:max")
    assert builtin.fingerprint == ""
    judge = metric_judge("builtins:max")
    assert judge.version.startswith("builtins:max#")
    with pytest.raises(MetricFailed, match=r"^metric builtins:max raised TypeError: "):
        asyncio.run(judge.score({"q": "x"}, "y"))


# --- calling -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (None, "returned None, not a (score, feedback) pair"),
        (0.5, "returned 0.5, not a (score, feedback) pair"),
        ((0.5,), "not a (score, feedback) pair"),
        ((0.5, "a", "b"), "not a (score, feedback) pair"),
        ({"score": 0.5, "feedback": "x"}, "not a (score, feedback) pair"),
        ((1.5, "x"), "returned the score 1.5, not 0..1"),
        ((-0.1, "x"), "the score -0.1, not 0..1"),
        (("0.5", "x"), "the score '0.5', not 0..1"),
        ((True, "x"), "the score True, not 0..1"),
        ((math.nan, "x"), "the score nan, not 0..1"),
        ((math.inf, "x"), "the score inf, not 0..1"),
        ((None, "x"), "the score None, not 0..1"),
        ((0.5, None), "returned the feedback None, not a string"),
        ((0.5, 3), "the feedback 3, not a string"),
    ],
)
def test_a_result_that_is_not_a_score_and_feedback_fails_the_judgment(
    result: object, problem: str
) -> None:
    with pytest.raises(MetricFailed) as raised:
        read_result("m.checks:f", result)
    assert isinstance(raised.value, InvalidReply)  # failed and retried like a judge error
    assert str(raised.value).startswith("metric m.checks:f ")
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("result", "verdict"),
    [
        ((1, "fine"), Verdict(1.0, "fine")),
        ([0.25, "  trimmed \n"], Verdict(0.25, "trimmed")),
        ((0.1 * 3 + 0.7, "sum"), Verdict(1.0, "sum")),  # a float hair above 1.0 is 1.0
        ((0.0, ""), Verdict(0.0, "")),
        ((0.5, "x" * 5000), Verdict(0.5, "x" * 2000)),  # capped like the judge model's
    ],
)
def test_usable_results_become_verdicts(result: object, verdict: Verdict) -> None:
    assert read_result("m:f", result) == verdict


def test_a_bad_result_through_the_judge_is_a_failed_judgment() -> None:
    too_good = CodeMetric("m:too_good", lambda inputs, output: (2, "too good"), "")
    judge = Judge(Gateway(load_settings()), None, metric=too_good)
    with pytest.raises(MetricFailed, match=r"the score 2, not 0\.\.1"):
        asyncio.run(judge.score({"q": "x"}, "bad"))


def test_a_raising_metric_fails_its_judgment_and_no_other() -> None:
    judge = metric_judge(f"{HERE}:raising_metric")
    with pytest.raises(MetricFailed) as raised:
        asyncio.run(judge.score({"q": "x"}, "reply"))
    assert str(raised.value) == (
        f"metric {HERE}:raising_metric raised ValueError: cannot read 'reply'"
    )
    assert isinstance(raised.value.__cause__, ValueError)
    words = metric_judge(f"{HERE}:words_metric")
    items = [({"user_message": "where is it"}, "it is here", None)]
    assert asyncio.run(score_all(judge, items)) == [None]
    assert asyncio.run(score_all(words, items)) == [Verdict(1.0, "echoes the question")]


def test_an_async_metric_is_awaited() -> None:
    judge = metric_judge(f"{HERE}:async_metric")
    assert asyncio.run(judge.score({"q": "x"}, "y")) == Verdict(0.25, "async on y")


def test_a_slow_sync_metric_does_not_hold_up_the_event_loop() -> None:
    release = threading.Event()
    finished: list[str] = []
    threads: set[int] = set()

    def gated(inputs: dict[str, str], output: str) -> tuple[float, str]:
        threads.add(threading.get_ident())
        if output == "slow":
            return (1.0, "released") if release.wait(scaled(10)) else (0.0, "never released")
        return 0.5, "quick"

    judge = Judge(Gateway(load_settings()), None, metric=CodeMetric("m:gated", gated, ""))

    async def scenario() -> Verdict:
        slow = asyncio.create_task(judge.score({"q": "x"}, "slow"))
        await asyncio.sleep(0)
        assert await judge.score({"q": "x"}, "fast") == Verdict(0.5, "quick")
        finished.append("fast")
        release.set()
        return await slow

    assert asyncio.run(scenario()) == Verdict(1.0, "released")
    assert finished == ["fast"]
    assert threading.get_ident() not in threads


def test_a_metric_that_does_not_answer_in_time_fails_its_judgment() -> None:
    release = threading.Event()

    def stuck(inputs: dict[str, str], output: str) -> tuple[float, str]:
        release.wait(scaled(10))
        return 1.0, "late"

    judge = Judge(
        Gateway(load_settings(llm_timeout_s=0.2)), None, metric=CodeMetric("m:stuck", stuck, "")
    )

    async def scenario() -> Verdict:
        try:
            return await judge.score({"q": "x"}, "y")
        finally:
            release.set()  # the thread cannot be stopped: let it end before the loop closes

    with pytest.raises(MetricFailed, match=r"^metric m:stuck did not answer within 0.2s$"):
        asyncio.run(scenario())


# --- blending ------------------------------------------------------------------------------


def test_the_judge_model_and_the_metric_are_averaged_with_both_reasons() -> None:
    blended = blend(Verdict(1.0, "polite"), Verdict(0.5, "misses the refund window"))
    assert blended == Verdict(0.75, "judge: polite | checks: misses the refund window")


@pytest.mark.parametrize(
    ("judged", "checks", "winner"),
    [
        ("a", "a", "a"),
        ("b", "b", "b"),
        ("a", "tie", "a"),
        ("tie", "b", "b"),
        ("a", "b", "tie"),  # opposite picks cancel
        ("b", "a", "tie"),
        ("tie", "tie", "tie"),
    ],
)
def test_pairwise_picks_are_weighed_equally(judged: Any, checks: Any, winner: str) -> None:
    assert blend_winners(judged, checks) == winner


def test_a_metric_only_judge_compares_by_the_metric_without_the_model() -> None:
    judge = metric_judge(f"{HERE}:words_metric", judge_api_base="http://127.0.0.1:9/v1")
    inputs = {"user_message": "where is my order"}
    better, worse = "your order ships today", "hello"
    result = asyncio.run(judge.compare(inputs, better, worse))
    assert (result.winner, result.orders) == ("a", ("A", "B"))
    assert result.feedback == (
        "checks on a: 1.00, echoes the question",
        "checks on b: 0.00, ignores the question",
    )
    swapped = asyncio.run(judge.compare(inputs, worse, better))
    assert (swapped.winner, swapped.orders) == ("b", ("B", "A"))
    same = asyncio.run(judge.compare(inputs, worse, "goodbye"))
    assert (same.winner, same.orders) == ("tie", ("tie", "tie"))


# --- building and versions -----------------------------------------------------------------


def test_a_judge_needs_a_rubric_or_a_metric() -> None:
    with pytest.raises(ValueError, match="needs a rubric, a code metric, or both"):
        Judge(Gateway(load_settings()), None)


def spec_with(**judge: Any) -> PromptSpec:
    return PromptSpec(name="p", seed={"system_prompt": "Help."}, judge=JudgeBlock(**judge))


def test_judge_for_builds_the_metric_into_the_judge() -> None:
    gateway = Gateway(load_settings())
    alone = judge_for(gateway, spec_with(metric=f"{HERE}:words_metric"))
    assert (alone.rubric, alone.examples) == (None, ())
    assert alone.metric is not None and alone.metric.function is words_metric
    both = judge_for(gateway, spec_with(rubric="Score 1 when kind.", metric=f"{HERE}:words_metric"))
    assert both.rubric == "Score 1 when kind." and both.metric is not None
    rubric_only = judge_for(gateway, spec_with(rubric="Score 1 when kind."))
    assert rubric_only.metric is None
    assert len({alone.version, both.version, rubric_only.version}) == 3
    assert both.version.startswith("openai/local#")


def test_a_metric_alone_is_versioned_by_the_metric_not_the_model() -> None:
    spec = spec_with(metric=f"{HERE}:words_metric")
    one = judge_for(Gateway(load_settings()), spec).version
    other_model = load_settings(judge_model="openai/gpt-4o", judge_api_base="http://h:1/v1")
    assert one.startswith(f"{HERE}:words_metric#")
    assert judge_for(Gateway(other_model), spec).version == one
    long = CodeMetric("m" * 200 + ":f", words_metric, "")
    assert len(judge_version("openai/local", None, None, None, long)) <= 128


def test_changing_the_metric_source_changes_the_version(
    write_module: Callable[..., str],
) -> None:
    name = f"metric_{uuid.uuid4().hex[:10]}"
    write_module(CHECKS, name, folder="before")
    before = metric_judge(f"{name}:check")
    forget(name)
    write_module(CHECKS.replace("'ok'", "'names the next step'"), name, folder="after")
    after = metric_judge(f"{name}:check")
    assert asyncio.run(after.score({}, "next step")) == Verdict(1.0, "names the next step")
    assert after.version != before.version
    assert after.version.split("#")[0] == before.version.split("#")[0] == f"{name}:check"
    forget(name)
    write_module(CHECKS, name, folder="again")  # the first source, elsewhere: the first version
    assert metric_judge(f"{name}:check").version == before.version


def package_version(
    write: Callable[..., str], package: str, folder: str, checks: str, facts: dict[str, str]
) -> str:
    """The version of `package.checks:check` written under `folder` with these other modules."""
    forget(package)
    write("", f"{package}.__init__", folder)
    write(checks, f"{package}.checks", folder)
    for module, source in facts.items():
        write(source, f"{package}.{module}", folder)
    return metric_judge(f"{package}.checks:check").version


def test_the_modules_of_its_package_that_a_metric_imports_are_versioned(
    write_module: Callable[..., str],
) -> None:
    package = f"pkg_{uuid.uuid4().hex[:10]}"
    checks = f"from {package}.facts import FACT\n\n" + CHECKS.replace("'next step'", "FACT")
    relative = checks.replace(f"from {package}.facts", "from .facts")

    def version(folder: str, text: str, **facts: str) -> str:
        return package_version(write_module, package, folder, text, facts)

    first = version("a", checks, facts="FACT = 'ships'\n")
    assert version("b", checks, facts="FACT = 'refunds'\n") != first
    assert version("c", checks, facts="FACT = 'ships'\n", unused="X = 2\n") == first
    assert version("d", relative, facts="FACT = 'ships'\n") != version(
        "e", relative, facts="FACT = 'refunds'\n"
    )


def test_the_metric_format_is_part_of_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_with(rubric="Score 1 when kind.", metric=f"{HERE}:words_metric")
    before = judge_for(Gateway(load_settings()), spec).version
    monkeypatch.setattr(rubric, "METRIC_VERSION", "metric-v999")
    assert judge_for(Gateway(load_settings()), spec).version != before
