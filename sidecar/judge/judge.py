"""The judge: one rubric, one model role, replies checked and retried until usable or given up."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.errors import LlmError
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
    """`winner` is "a", "b" or "tie"; `orders` are the raw picks (A/B/tie) in each order."""

    winner: Winner
    orders: tuple[str, str]
    feedback: tuple[str, str]


class Judge:
    """Scores outputs against `rubric`, after its worked `examples` (None: `examples_for` the
    rubric). `invalid_retries` more asks follow an unusable reply."""

    def __init__(
        self,
        gateway: Gateway,
        rubric: str,
        examples: Sequence[JudgeExample] | None = None,
        invalid_retries: int = 2,
    ) -> None:
        self.gateway = gateway
        self.rubric = rubric
        self.examples = examples_for(rubric, examples)
        self.invalid_retries = invalid_retries
        role = gateway.roles[ROLE]
        self.version = judge_version(role.model, role.api_base, rubric, self.examples)

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

    async def score(
        self,
        inputs: Mapping[str, str],
        output: str,
        trace: Mapping[str, Any] | None = None,
    ) -> Verdict:
        """The score and feedback for one output."""
        messages = score_messages(self.rubric, inputs, output, trace, examples=self.examples)
        verdict: Verdict = await self._ask(messages, JUDGMENT_SCHEMA, parse_verdict)
        return verdict

    async def compare(
        self, inputs: Mapping[str, str], output_a: str, output_b: str
    ) -> PairwiseResult:
        """Which of two outputs is better, judged in both orders; disagreement is a tie."""
        first, second = await asyncio.gather(
            self._ask(
                pairwise_messages(self.rubric, inputs, output_a, output_b),
                PAIRWISE_SCHEMA,
                parse_pairwise,
            ),
            self._ask(
                pairwise_messages(self.rubric, inputs, output_b, output_a),
                PAIRWISE_SCHEMA,
                parse_pairwise,
            ),
        )
        return PairwiseResult(
            winner=combine_orders(first[0], second[0]),
            orders=(first[0], second[0]),
            feedback=(first[1], second[1]),
        )


def judge_for(gateway: Gateway, spec: PromptSpec | None) -> Judge:
    """The judge of a prompt as its spec says (rubric and examples), else the built-in one: the
    one way to build it, so workers, optimizer and CLI agree on the judge version."""
    block = spec.judge if spec is not None else None
    if block is None:
        return Judge(gateway, DEFAULT_RUBRIC)
    return Judge(gateway, block.rubric, block.examples)


async def score_all(
    judge: Judge,
    items: Sequence[tuple[Mapping[str, str], str, Mapping[str, Any] | None]],
) -> list[Verdict | None]:
    """Score many (inputs, output, trace) at the gateway's concurrency; None where it failed."""

    async def one(inputs: Mapping[str, str], output: str, trace: Any) -> Verdict | None:
        try:
            return await judge.score(inputs, output, trace)
        except (LlmError, InvalidReply):
            return None

    return list(await asyncio.gather(*(one(*item) for item in items)))
