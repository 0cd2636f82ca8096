"""Paying for evaluations, once: a metric call replays a candidate's task on one event's inputs
and has the judge score the output. Every version, the champion included, is scored this one
way (like for like: production's live judgments never stand in for a replay). Evaluations are
cached in the store under the task path and judge versions, calls start only when the budget
allows them, and what they cost is charged to the run's guard.

An output already judged on the same event is not judged again: the same words to the same
question get the same verdict, so a child that leaves a reply unchanged ties its parent there
exactly, instead of by the luck of the judge's noise (and the judge call is saved).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Engine

from sidecar.errors import LlmError
from sidecar.judge.judge import Judge
from sidecar.judge.verdict import InvalidReply
from sidecar.llm.gateway import Gateway
from sidecar.optimize.budget import BudgetGuard
from sidecar.optimize.task import render_task, task_version
from sidecar.settings import PromptSpec
from sidecar.store.candidates import Scored, cached_evaluations, store_evaluations
from sidecar.store.tables import Candidate

log = logging.getLogger(__name__)

METRIC_ROLES = ("task", "judge")
PAY_ROUNDS = 2
"""A failed evaluation is asked for in one more round: one retry, after the gateway's own."""


class Replayable(Protocol):
    """What a replay reads of an event: its row and its inputs (an optimizer's judged
    `Instance`, or a fresh event the shadow runner compares on)."""

    @property
    def row_id(self) -> int: ...

    @property
    def inputs(self) -> dict[str, str]: ...


def evaluation_key(gateway: Gateway, judge: Judge, spec: PromptSpec) -> tuple[str, str]:
    """(task version, judge version): what an evaluation is cached under besides its candidate
    and event; the one way to compute it, so the optimizer and the CLI read the same cache."""
    task = gateway.roles["task"]
    return task_version(task.model, task.api_base, spec.task), judge.version


class Evaluator:
    """`scores` is everything this run knows: version → event row → evaluation."""

    def __init__(
        self, db: Engine, gateway: Gateway, judge: Judge, spec: PromptSpec, guard: BudgetGuard
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.judge = judge
        self.spec = spec
        self.guard = guard
        self.key = evaluation_key(gateway, judge, spec)
        self.instances: dict[int, Replayable] = {}
        self.scores: dict[int, dict[int, Scored]] = {}
        self.verdicts: dict[tuple[int, str], Scored] = {}  # (event, output) -> its judgment
        self.run_id: int | None = None

    def _metric_spend(self) -> float:
        return self.gateway.ledger.cost_usd(*METRIC_ROLES)

    async def _evaluate_one(
        self, components: dict[str, str], instance: Replayable
    ) -> Scored | None:
        messages = render_task(self.spec.task, components, instance.inputs)
        try:
            completion = await self.gateway.complete("task", messages)
            known = self.verdicts.get((instance.row_id, completion.text))
            if known is not None:
                return known
            verdict = await self.judge.score(instance.inputs, completion.text)
        except LlmError as exc:  # the gateway tells model failures, a line a minute at most
            log.debug("evaluation on event %d failed: %s", instance.row_id, exc)
            return None
        except InvalidReply as exc:
            log.warning("evaluation on event %d failed: %s", instance.row_id, exc)
            return None
        return Scored(completion.text, verdict.score, verdict.feedback)

    async def recall(self, candidate_ids: Sequence[int]) -> None:
        """Learn every verdict already paid for on the window's events (by any of these
        candidates, in any run), so an output judged before is not judged again."""
        cached = await asyncio.to_thread(
            cached_evaluations, self.db, candidate_ids, list(self.instances), self.key
        )
        for (_, event), result in cached.items():
            self.verdicts.setdefault((event, result.output), result)

    def _know(self, version: int, scored: dict[int, Scored]) -> None:
        self.scores.setdefault(version, {}).update(scored)
        for event, result in scored.items():
            self.verdicts.setdefault((event, result.output), result)

    async def pay(self, components: dict[str, str], events: Sequence[int]) -> dict[int, Scored]:
        """Evaluate on as many of `events` as the budget allows (in order; the guard may let the
        first call alone go ahead, to learn the price)."""
        pending = list(events)
        paid: dict[int, Scored] = {}
        while pending:
            allowed = self.guard.affordable(len(pending))
            if not allowed:
                break
            todo, pending = pending[:allowed], pending[allowed:]
            before = self._metric_spend()
            results = await asyncio.gather(
                *(self._evaluate_one(components, self.instances[event]) for event in todo)
            )
            self.guard.record_calls(len(todo), self._metric_spend() - before)
            paid.update(
                {event: result for event, result in zip(todo, results, strict=True) if result}
            )
        return paid

    async def keep(self, candidate: Candidate, scored: dict[int, Scored]) -> None:
        """Know these evaluations (paid for in this run) and cache them."""
        self._know(candidate.version, scored)
        assert candidate.id is not None
        await asyncio.to_thread(
            store_evaluations,
            self.db,
            candidate.id,
            self.key,
            scored,
            self.run_id,
            datetime.now(UTC),
        )

    async def scores_for(self, candidate: Candidate, events: Sequence[int]) -> dict[int, Scored]:
        """A pool candidate's evaluations on `events`: cached, or paid for and cached. What the
        provider failed is asked once more (budget allowing) before the candidate is left with
        partial evidence, which blocks a proposal and, for the champion, every proposal."""
        known = self.scores.setdefault(candidate.version, {})
        missing = [event for event in events if event not in known]
        if missing:
            assert candidate.id is not None
            cached = await asyncio.to_thread(
                cached_evaluations, self.db, [candidate.id], missing, self.key
            )
            self._know(candidate.version, {event: s for (_, event), s in cached.items()})
            for _ in range(PAY_ROUNDS):
                unpaid = [event for event in missing if event not in known]
                if not unpaid or self.guard.exhausted:
                    break
                await self.keep(candidate, await self.pay(dict(candidate.components), unpaid))
        return {event: known[event] for event in events if event in known}
