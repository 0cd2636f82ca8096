"""One GEPA run over a prompt's recent judged traffic, persisted as it goes.

The window of judged events is split into a feedback set (minibatches to learn from) and a
Pareto set (where candidates are compared per instance). The champion's live outputs and their
judgments are its evaluations for free; every other (candidate, event) evaluation is paid once
and cached in the store, so a later run, warm-started from the frontier the last one left,
never pays for it again. Each accepted child is a new version (`pool`) with its lineage; each
proposal, accepted or not, is a mutation attempt the next reflection on that parent reads.
At the end, frontier candidates that beat the champion on the Pareto set become `proposed`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from sidecar.errors import LlmError, SidecarError
from sidecar.judge.judge import Judge
from sidecar.judge.rubric import DEFAULT_RUBRIC
from sidecar.llm.gateway import Gateway
from sidecar.optimize.acceptance import accept
from sidecar.optimize.budget import Budget, BudgetGuard
from sidecar.optimize.evaluation import Evaluator
from sidecar.optimize.frontier import Frontier, mean_score, pareto_frontier, sample_parent
from sidecar.optimize.merge import common_ancestor, merged_components
from sidecar.optimize.reflection import (
    InvalidProposal,
    LineageNote,
    Proposer,
    ReflectionExample,
)
from sidecar.optimize.safety import flags_for
from sidecar.optimize.selection import MinibatchSampler, next_component, split_instances
from sidecar.settings import PromptSpec, Settings
from sidecar.store.candidates import (
    Instance,
    Scored,
    attempts_from,
    candidates_of,
    finish_run,
    insert_candidate,
    judged_window,
    latest_frontier,
    mark_proposed,
    record_attempt,
    set_evidence,
    start_run,
)
from sidecar.store.tables import Candidate, MutationAttempt

PERFECT = 1.0


class NotEnoughTraffic(SidecarError):
    """The window holds too few judged events to split and compare on."""


@dataclass
class RunReport:
    """What a run did, for the CLI, the scheduler and the metrics."""

    run_id: int
    prompt: str
    outcome: str
    stop_reason: str | None
    metric_calls: int
    cost_usd: float
    champion_version: int
    champion_score: float
    best_version: int
    best_score: float
    frontier: list[int]
    proposed: list[int]
    new_versions: list[int] = field(default_factory=list)
    iterations: int = 0
    pareto_size: int = 0
    partial: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def budget_from(settings: Settings) -> Budget:
    return Budget(
        max_metric_calls=settings.run_max_metric_calls,
        max_usd=settings.run_budget_usd,
        max_seconds=settings.run_max_seconds,
        patience=settings.optimize_patience,
    )


class OptimizationRun:
    """Run with `await run.execute()`; `progress` is called after every iteration."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        spec: PromptSpec,
        budget: Budget | None = None,
        seed: int | None = None,
        progress: Callable[[RunReport], None] | None = None,
    ) -> None:
        self.db = engine
        self.settings = settings
        self.spec = spec
        self.gateway = Gateway(settings)
        self.judge = Judge(self.gateway, spec.judge.rubric if spec.judge else DEFAULT_RUBRIC)
        self.proposer = Proposer(self.gateway, settings.optimize_max_component_chars)
        self.guard = BudgetGuard(budget or budget_from(settings))
        self.evaluator = Evaluator(engine, self.gateway, self.judge, spec, self.guard)
        self.rng = random.Random(seed)
        self.progress = progress
        self.pool: dict[int, Candidate] = {}  # the candidates this run compares
        self.known: dict[int, Candidate] = {}  # every version of the prompt, for lineage
        self.pareto: list[int] = []
        self.run_id = 0

    # --- the frontier --------------------------------------------------------------------------

    def _frontier(self, pareto: Sequence[int]) -> Frontier:
        table = {
            version: {e: s.score for e, s in scored.items() if e in pareto}
            for version, scored in self.evaluator.scores.items()
            if version in self.pool
        }
        return pareto_frontier(
            {v: t for v, t in table.items() if t}, self.settings.optimize_epsilon
        )

    def _mean_on(self, version: int, events: Sequence[int]) -> float:
        scored = self.evaluator.scores.get(version, {})
        return mean_score({e: scored[e].score for e in events if e in scored})

    # --- one iteration ---------------------------------------------------------------------------

    def _lineage(self, version: int) -> list[LineageNote]:
        notes: list[LineageNote] = []
        current: int | None = version
        while current is not None and current in self.known and len(notes) < 10:
            candidate = self.known[current]
            changed = candidate.mutation_summary or "seed"
            score = (
                self._mean_on(current, self.pareto) if self.evaluator.scores.get(current) else None
            )
            notes.append(
                LineageNote(current, _changed_component(candidate, self.known), changed, score)
            )
            current = candidate.parents[0] if candidate.parents else None
        return list(reversed(notes))

    async def _reflect(
        self, parent: Candidate, component: str, minibatch: Sequence[int]
    ) -> MutationAttempt | None:
        """Propose a new text for `component` of `parent`; the attempt, or None if no budget."""
        parent_scores = await self.evaluator.scores_for(parent, minibatch)
        if len(parent_scores) < len(minibatch):
            return None
        if all(s.score >= PERFECT for s in parent_scores.values()):
            return None  # nothing to learn from a perfect minibatch (GEPA skips it too)
        examples = [
            ReflectionExample(self.evaluator.instances[e].inputs, s.output, s.score, s.feedback)
            for e, s in parent_scores.items()
        ]
        if not self.guard.reflection_affordable():
            return None
        tried = await asyncio.to_thread(attempts_from, self.db, self.spec.name, parent.version)
        rejected = [
            LineageNote(parent.version, a.component, a.summary)
            for a in tried
            if a.outcome != "accepted"
        ]
        before = self.gateway.ledger.cost_usd("reflection")
        attempt = MutationAttempt(
            prompt_name=self.spec.name,
            run_id=self.run_id,
            parent_version=parent.version,
            component=component,
            summary="",
            outcome="failed",
            parent_score=sum(s.score for s in parent_scores.values()),
            created_at=datetime.now(UTC),
        )
        try:
            proposal = await self.proposer.propose(
                component,
                parent.components[component],
                examples,
                self._lineage(parent.version),
                rejected,
            )
        except (InvalidProposal, LlmError) as exc:
            attempt.summary = f"no usable proposal: {exc}"[:300]
            return attempt
        finally:
            self.guard.record_usd(self.gateway.ledger.cost_usd("reflection") - before)
        attempt.summary = proposal.summary
        attempt.text = proposal.text
        child = {**parent.components, component: proposal.text}
        child_scores = await self.evaluator.pay(child, minibatch)
        if len(child_scores) < len(minibatch):
            attempt.summary += " (not scored: budget spent)"
            return attempt
        attempt.child_score = sum(s.score for s in child_scores.values())
        parent_table = {e: s.score for e, s in parent_scores.items()}
        child_table = {e: s.score for e, s in child_scores.items()}
        if not accept(parent_table, child_table, self.settings.optimize_margin):
            attempt.outcome = "rejected"
            return attempt
        candidate = await self._add(child, [parent.version], proposal.summary, parent, child_scores)
        attempt.outcome = "accepted"
        attempt.child_version = candidate.version
        return attempt

    async def _add(
        self,
        components: dict[str, str],
        parents: list[int],
        summary: str,
        base: Candidate,
        minibatch_scores: dict[int, Scored],
    ) -> Candidate:
        """A new pool version, flagged where needed, with the minibatch evaluations it won with
        (already paid for: they go to the cache)."""
        traffic = [value for i in self.evaluator.instances.values() for value in i.inputs.values()]
        flags = flags_for(components, dict(base.components), traffic)
        candidate = await asyncio.to_thread(
            insert_candidate,
            self.db,
            self.spec.name,
            components,
            parents,
            self.run_id,
            summary,
            flags,
            datetime.now(UTC),
        )
        self.pool[candidate.version] = candidate
        self.known[candidate.version] = candidate
        await self.evaluator.keep(candidate, minibatch_scores, self.run_id)
        return candidate

    async def _merge(self, frontier: Frontier, minibatch: Sequence[int]) -> int | None:
        """Try one merge of two frontier candidates; the new version when it is accepted."""
        lineage = {v: list(c.parents) for v, c in self.pool.items()}
        versions = frontier.candidates
        pairs = [(a, b) for i, a in enumerate(versions) for b in versions[i + 1 :]]
        self.rng.shuffle(pairs)
        for a, b in pairs:
            ancestor = common_ancestor(a, b, lineage)
            if ancestor is None or ancestor in (a, b):
                continue
            merged = merged_components(
                self.pool[ancestor].components, self.pool[a].components, self.pool[b].components
            )
            if merged is None or any(c.components == merged for c in self.pool.values()):
                continue
            parent_a = await self.evaluator.scores_for(self.pool[a], minibatch)
            parent_b = await self.evaluator.scores_for(self.pool[b], minibatch)
            child = await self.evaluator.pay(merged, minibatch)
            if len(child) < len(minibatch) or len(parent_a) < len(minibatch):
                return None
            best_parent = max(
                (
                    {e: s.score for e, s in parent_a.items()},
                    {e: s.score for e, s in parent_b.items()},
                ),
                key=lambda table: sum(table.values()),
            )
            if not accept(best_parent, {e: s.score for e, s in child.items()}):
                return None
            summary = f"merged v{a} and v{b} (common ancestor v{ancestor})"
            candidate = await self._add(merged, [a, b], summary, self.pool[a], child)
            return candidate.version
        return None

    # --- the run -------------------------------------------------------------------------------

    async def execute(self) -> RunReport:
        settings = self.settings
        since = datetime.now(UTC) - timedelta(hours=settings.optimize_window_hours)
        window = await asyncio.to_thread(
            judged_window,
            self.db,
            self.spec.name,
            self.judge.version,
            settings.optimize_window_events,
            since,
        )
        if len(window) < 2:
            raise NotEnoughTraffic(
                f"{self.spec.name}: {len(window)} judged events in the window; need at least 2"
            )
        self.evaluator.instances = {instance.row_id: instance for instance in window}
        budget = self.guard.budget
        self.run_id = await asyncio.to_thread(
            start_run,
            self.db,
            self.spec.name,
            {
                "max_metric_calls": budget.max_metric_calls,
                "max_usd": budget.max_usd,
                "max_seconds": budget.max_seconds,
                "patience": budget.patience,
            },
            datetime.now(UTC),
        )
        self.evaluator.run_id = self.run_id
        try:
            report = await self._iterate(window)
        except BaseException as exc:
            await asyncio.to_thread(
                finish_run,
                self.db,
                self.run_id,
                "failed",
                self.guard.spend.metric_calls,
                self._total_cost(),
                [],
                datetime.now(UTC),
                " ".join(str(exc).split())[:500] or type(exc).__name__,
            )
            raise
        await asyncio.to_thread(
            finish_run,
            self.db,
            self.run_id,
            "finished",
            report.metric_calls,
            report.cost_usd,
            report.frontier,
            datetime.now(UTC),
        )
        return report

    def _total_cost(self) -> float:
        return self.gateway.ledger.cost_usd()

    async def _iterate(self, window: list[Instance]) -> RunReport:
        settings = self.settings
        feedback, pareto = split_instances(
            [(i.row_id, i.segment) for i in window], settings.optimize_pareto_fraction, self.rng
        )
        everyone = await asyncio.to_thread(candidates_of, self.db, self.spec.name)
        self.known = dict(everyone)
        self.pareto = pareto
        active = [c for c in everyone.values() if c.status == "active"]
        if not active:
            raise SidecarError(f"{self.spec.name}: no active version to improve on")
        champion = active[0]
        warm = await asyncio.to_thread(latest_frontier, self.db, self.spec.name)
        self.pool = {v: everyone[v] for v in {champion.version, *warm} if v in everyone}
        # the champion's live, judged outputs are its evaluations, for free
        live = {
            i.row_id: Scored(i.output, i.score, i.feedback)
            for i in window
            if i.prompt_version == champion.version
        }
        await self.evaluator.keep(champion, live, None)
        report = RunReport(
            run_id=self.run_id,
            prompt=self.spec.name,
            outcome="finished",
            stop_reason=None,
            metric_calls=0,
            cost_usd=0.0,
            champion_version=champion.version,
            champion_score=0.0,
            best_version=champion.version,
            best_score=0.0,
            frontier=[],
            proposed=[],
            pareto_size=len(pareto),
        )
        for candidate in list(self.pool.values()):
            await self.evaluator.scores_for(candidate, pareto)
        sampler = MinibatchSampler(feedback, settings.optimize_minibatch_size, self.rng)
        proposals: dict[int, int] = {}
        while not self.guard.exhausted:
            frontier = self._frontier(pareto)
            if not frontier.candidates:
                break
            if self._perfect(pareto):
                report.stop_reason = "perfect_on_pareto"
                break
            report.iterations += 1
            minibatch = sampler.next()
            merge_turn = settings.optimize_merge_every and (
                report.iterations % settings.optimize_merge_every == 0
            )
            new_version: int | None = None
            if merge_turn and len(frontier.candidates) >= 2:
                new_version = await self._merge(frontier, minibatch)
            else:
                parent = self.pool[sample_parent(frontier, self.rng)]
                component = next_component(
                    list(parent.components), proposals.get(parent.version, 0)
                )
                proposals[parent.version] = proposals.get(parent.version, 0) + 1
                attempt = await self._reflect(parent, component, minibatch)
                if attempt is not None:
                    await asyncio.to_thread(record_attempt, self.db, attempt)
                    new_version = attempt.child_version
            progressed = False
            if new_version is not None:
                report.new_versions.append(new_version)
                scored = await self.evaluator.scores_for(self.pool[new_version], pareto)
                if len(scored) < len(pareto):
                    report.partial[new_version] = f"scored on {len(scored)} of {len(pareto)}"
                progressed = new_version in self._frontier(pareto).wins
            self.guard.record_iteration(progressed)
            self._summarise(report, pareto)
            if self.progress is not None:
                self.progress(report)
        self._summarise(report, pareto)
        report.stop_reason = report.stop_reason or self.guard.spend.stop_reason or "frontier_empty"
        champion_mean = report.champion_score
        report.proposed = [
            v
            for v in report.frontier
            if v != champion.version
            and self.pool[v].status == "pool"
            and self._mean_on(v, self._common(v, champion.version, pareto))
            > self._mean_on(champion.version, self._common(v, champion.version, pareto))
        ]
        for version in sorted(set(report.new_versions) | set(report.proposed)):
            await asyncio.to_thread(
                set_evidence,
                self.db,
                self.spec.name,
                version,
                self._evidence(version, champion.version, pareto),
            )
        if report.proposed:
            await asyncio.to_thread(
                mark_proposed,
                self.db,
                self.spec.name,
                report.proposed,
                f"run {self.run_id}: on the frontier and above the champion ({champion_mean:.3f})",
                datetime.now(UTC),
            )
        return report

    def _evidence(self, version: int, champion: int, pareto: Sequence[int]) -> dict[str, Any]:
        """What `show` prints as evidence: the run's Pareto-set scores, against the champion's
        on the same events, and how much of the Pareto set the candidate was scored on."""
        common = self._common(version, champion, pareto)
        return {
            "run_id": self.run_id,
            "judge_version": self.judge.version,
            "pareto_mean": round(self._mean_on(version, pareto), 4),
            "champion_mean": round(self._mean_on(champion, common), 4),
            "pareto_scored": len(self.evaluator.scores.get(version, {}).keys() & set(pareto)),
            "pareto_size": len(pareto),
            "n": len(common),
        }

    def _perfect(self, pareto: Sequence[int]) -> bool:
        """Some candidate scores the maximum on every Pareto instance: nothing can beat it."""
        return any(
            all(e in scored and scored[e].score >= PERFECT for e in pareto)
            for version, scored in self.evaluator.scores.items()
            if version in self.pool
        )

    def _common(self, a: int, b: int, events: Sequence[int]) -> list[int]:
        mine, theirs = self.evaluator.scores.get(a, {}), self.evaluator.scores.get(b, {})
        return [e for e in events if e in mine and e in theirs]

    def _summarise(self, report: RunReport, pareto: Sequence[int]) -> None:
        frontier = self._frontier(pareto)
        report.frontier = sorted(frontier.wins)
        report.metric_calls = self.guard.spend.metric_calls
        report.cost_usd = self._total_cost()
        report.champion_score = self._mean_on(report.champion_version, pareto)
        means = {v: self._mean_on(v, pareto) for v in self.pool if self.evaluator.scores.get(v)}
        report.best_version = max(means, key=lambda v: (means[v], -v))
        report.best_score = means[report.best_version]


def _changed_component(candidate: Candidate, pool: dict[int, Candidate]) -> str:
    """Which component this candidate changed from its first parent (or `seed`)."""
    if not candidate.parents or candidate.parents[0] not in pool:
        return "seed"
    parent = pool[candidate.parents[0]].components
    changed = [name for name, text in candidate.components.items() if parent.get(name) != text]
    return ", ".join(sorted(changed)) or "nothing"
