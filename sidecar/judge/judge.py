"""The judge: a rubric read by the judge model (replies checked and retried until usable or given
up), a code metric, or both averaged: one object, so live judgments and replays agree."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.errors import LlmError
from sidecar.judge.metric import CodeMetric, blend, blend_winners, load_metric
from sidecar.judge.rubric import (
    DEFAULT_RUBRIC,
    JUDGMENT_SCHEMA,
    PAIRWISE_SCHEMA,
    examples_for,
    judge_version,
    pairwise_messages,
    score_messages,
)
from sidecar.judge.verdict import (
    InvalidReply,
    Verdict,
    Winner,
    combine_orders,
    parse_pairwise,
    parse_verdict,
)
from sidecar.llm.gateway import Gateway
from sidecar.settings import JudgeExample, PromptSpec

ROLE = "judge"


@dataclass(frozen=True)
class PairwiseResult:
    """`winner` is "a", "b" or "tie"; `orders` are the raw picks (A/B/tie) in each order (the
    judge model's when there is a rubric); `feedback` says why, in two parts shown joined."""

    winner: Winner
    orders: tuple[str, str]
    feedback: tuple[str, str]


_METRIC_ORDERS: dict[Winner, tuple[str, str]] = {
    "a": ("A", "B"),
    "b": ("B", "A"),
    "tie": ("tie", "tie"),
}


class Judge:
    """Scores outputs against `rubric` (after its worked `examples`; None: `examples_for` the
    rubric), with a code `metric`, or with both, averaged. `invalid_retries` more asks follow
    an unusable reply of the judge model."""

    def __init__(
        self,
        gateway: Gateway,
        rubric: str | None,
        examples: Sequence[JudgeExample] | None = None,
        invalid_retries: int = 2,
        metric: CodeMetric | None = None,
    ) -> None:
        if rubric is None and metric is None:
            raise ValueError("a judge needs a rubric, a code metric, or both")
        self.gateway = gateway
        self.rubric = rubric
        self.metric = metric
        self.examples = examples_for(rubric, examples) if rubric is not None else ()
        self.invalid_retries = invalid_retries
        role = gateway.roles[ROLE]
        self.version = judge_version(role.model, role.api_base, rubric, self.examples, metric)

    def _count(self, outcome: str) -> None:
        if self.gateway.metrics is not None:
            self.gateway.metrics.judge_requests.labels(outcome).inc()

    async def _ask(self, messages: list[dict[str, str]], schema: dict[str, Any], parse: Any) -> Any:
        """Ask until a reply parses; raises InvalidReply or LlmError when it never does."""
        response_format = schema if self.gateway.accepts_schema(ROLE) else None
        problem: InvalidReply | None = None
        for _ in range(self.invalid_retries + 1):
            try:
                completion = await self.gateway.complete(
                    ROLE,
                    messages,
                    response_format=response_format,
                    max_tokens=self.gateway.settings.judge_max_tokens,
                )
            except Exception:
                self._count("provider_error")
                raise
            try:
                parsed = parse(completion.text)
            except InvalidReply as exc:
                self._count("invalid_reply")
                problem = exc
                continue
            self._count("ok")
            return parsed
        assert problem is not None
        raise problem

    async def _checks(self, metric: CodeMetric, inputs: Mapping[str, str], output: str) -> Verdict:
        return await metric.score(inputs, output, self.gateway.settings.llm_timeout_s)

    async def score(
        self,
        inputs: Mapping[str, str],
        output: str,
        trace: Mapping[str, Any] | None = None,
    ) -> Verdict:
        """The score and feedback for one output. The metric runs first: when it fails, the
        judgment fails without paying the judge model."""
        checks = None if self.metric is None else await self._checks(self.metric, inputs, output)
        if self.rubric is None:
            assert checks is not None  # the constructor refuses a judge with neither
            return checks
        messages = score_messages(self.rubric, inputs, output, trace, examples=self.examples)
        judged: Verdict = await self._ask(messages, JUDGMENT_SCHEMA, parse_verdict)
        return judged if checks is None else blend(judged, checks)

    async def compare(
        self, inputs: Mapping[str, str], output_a: str, output_b: str
    ) -> PairwiseResult:
        """Which of two outputs is better: the metric's higher score, the judge model asked in
        both orders (disagreement is a tie), or both weighed equally (`blend_winners`)."""
        checks = None
        if self.metric is not None:
            checks = await self._compare_checks(self.metric, inputs, output_a, output_b)
        if self.rubric is None:
            assert checks is not None  # the constructor refuses a judge with neither
            return checks
        judged = await self._compare_judged(self.rubric, inputs, output_a, output_b)
        if checks is None:
            return judged
        return PairwiseResult(
            winner=blend_winners(judged.winner, checks.winner),
            orders=judged.orders,
            feedback=("judge: " + " / ".join(judged.feedback), "; ".join(checks.feedback)),
        )

    async def _compare_judged(
        self, rubric: str, inputs: Mapping[str, str], output_a: str, output_b: str
    ) -> PairwiseResult:
        first, second = await asyncio.gather(
            self._ask(
                pairwise_messages(rubric, inputs, output_a, output_b),
                PAIRWISE_SCHEMA,
                parse_pairwise,
            ),
            self._ask(
                pairwise_messages(rubric, inputs, output_b, output_a),
                PAIRWISE_SCHEMA,
                parse_pairwise,
            ),
        )
        return PairwiseResult(
            winner=combine_orders(first[0], second[0]),
            orders=(first[0], second[0]),
            feedback=(first[1], second[1]),
        )

    async def _compare_checks(
        self, metric: CodeMetric, inputs: Mapping[str, str], output_a: str, output_b: str
    ) -> PairwiseResult:
        a, b = await asyncio.gather(
            self._checks(metric, inputs, output_a), self._checks(metric, inputs, output_b)
        )
        winner: Winner = "a" if a.score > b.score else "b" if b.score > a.score else "tie"
        return PairwiseResult(
            winner=winner,
            orders=_METRIC_ORDERS[winner],
            feedback=(
                f"checks on a: {a.score:.2f}, {a.feedback}",
                f"checks on b: {b.score:.2f}, {b.feedback}",
            ),
        )


def judge_for(gateway: Gateway, spec: PromptSpec | None) -> Judge:
    """The judge of a prompt as its spec says (rubric, examples, code metric), else the built-in
    one: the one way to build it, so workers, optimizer, shadow runner and CLI agree on the
    judge and its version."""
    block = spec.judge if spec is not None else None
    if block is None:
        return Judge(gateway, DEFAULT_RUBRIC)
    metric = load_metric(block.metric) if block.metric is not None else None
    return Judge(gateway, block.rubric, block.examples, metric=metric)


async def score_all(
    judge: Judge,
    items: Sequence[tuple[Mapping[str, str], str, Mapping[str, Any] | None]],
    problems: list[str] | None = None,
) -> list[Verdict | None]:
    """Score many (inputs, output, trace) at the gateway's concurrency; None where it failed,
    and why appended to `problems` when given."""

    async def one(inputs: Mapping[str, str], output: str, trace: Any) -> Verdict | None:
        try:
            return await judge.score(inputs, output, trace)
        except (LlmError, InvalidReply) as exc:
            if problems is not None:
                problems.append(str(exc))
            return None

    return list(await asyncio.gather(*(one(*item) for item in items)))
