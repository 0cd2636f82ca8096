"""One GEPA run over a prompt's recent judged traffic, persisted as it goes.

The window of judged events is split into a feedback set (minibatches to learn from) and a
Pareto set (where candidates are compared per instance). Every version in the pool, the
champion included, is replayed through the same task path and judged the same way (like for
like); every (candidate, event) evaluation is paid once and cached in the store, so a later run,
warm-started from the frontier the last one left, never pays for it again. Each accepted child
is a new version (`pool`) with its lineage; each proposal, accepted or not, is a mutation
attempt the next reflection on that parent reads. At the end, frontier candidates scored on the
whole Pareto set that beat the champion by the paired margin become `proposed`.

Events weigh 1/the rate ingest kept them at (`weights.py`) wherever scores are aggregated; the
window and its splits count events: an oversampled segment is there to learn from, not to vote.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from sidecar.errors import SidecarError
from sidecar.judge.judge import judge_for
from sidecar.llm.gateway import Gateway
from sidecar.optimize.breeding import PERFECT, Breeder, Population
from sidecar.optimize.budget import Budget, BudgetGuard
from sidecar.optimize.evaluation import Evaluator
from sidecar.optimize.evidence import paired_evidence, proposal_verdict
from sidecar.optimize.frontier import Frontier, mean_score, pareto_frontier, sample_parent
from sidecar.optimize.interrupt import Interrupt, Interrupted, interruptible
from sidecar.optimize.outcome import MODEL_ERROR, NOTHING_TO_LEARN, hopeless, run_failure
from sidecar.optimize.reflection import Proposer
from sidecar.optimize.selection import (
    MinibatchSampler,
    next_component,
    pareto_fraction,
    split_instances,
)
from sidecar.optimize.weights import Weights, relative_weights
from sidecar.settings import PromptSpec, Settings
from sidecar.store.candidates import (
    Instance,
    candidates_of,
    finish_run,
    judged_window,
    latest_frontier,
    mark_proposed,
    record_attempt,
    set_evidence,
    start_run,
)
from sidecar.store.model_errors import StoredFailures
from sidecar.store.promotions import never_breed
from sidecar.store.spend import SpendTotal, keep_spend
from sidecar.store.tables import Candidate

UNBREEDABLE = frozenset({"rejected"})
"""Statuses a warm pool never takes back: a person's "no" does not keep breeding."""


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
    held_back: list[int] = field(default_factory=list)
    iterations: int = 0
    pareto_size: int = 0
    partial: dict[int, str] = field(default_factory=dict)
    error: str | None = None  # why a `failed` run made nothing (its models failed)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def budget_from(settings: Settings) -> Budget:
    return Budget(
        max_metric_calls=settings.run_max_metric_calls,
        max_usd=settings.run_budget_usd,
        max_seconds=settings.run_max_seconds,
        patience=settings.optimize_patience,
    )


def warm_pool(
    everyone: dict[int, Candidate],
    frontier: Sequence[int],
    champion: int,
    cap: int,
    barred: AbstractSet[int] = frozenset(),
) -> list[int]:
    """The champion plus at most `cap` versions of the last frontier, best evidence first;
    never a rejected, flagged or `barred` one (retired by a rollback: it would keep breeding)."""
    eligible = [
        v
        for v in frontier
        if v in everyone
        and v != champion
        and v not in barred
        and everyone[v].status not in UNBREEDABLE
        and not everyone[v].flags
    ]
    eligible.sort(key=lambda v: (-float((everyone[v].evidence or {}).get("pareto_mean", 0.0)), -v))
    return [champion, *eligible[:cap]]


class OptimizationRun:
    """Run with `await run.execute()`; `progress` is called after every iteration; setting
    `interrupt` ends the run at its next step."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        spec: PromptSpec,
        budget: Budget | None = None,
        seed: int | None = None,
        progress: Callable[[RunReport], None] | None = None,
        interrupt: Interrupt | None = None,
    ) -> None:
        self.db = engine
        self.settings = settings
        self.spec = spec
        self.gateway = Gateway(settings, sink=StoredFailures(engine))
        self.judge = judge_for(self.gateway, spec)
        self.proposer = Proposer(self.gateway, settings.optimize_max_component_chars)
        self.guard = BudgetGuard(budget or budget_from(settings), interrupt=interrupt)
        self.evaluator = Evaluator(engine, self.gateway, self.judge, spec, self.guard)
        self.rng = random.Random(seed)
        self.progress = progress
        self.population = Population(pool={}, known={})
        self.turns: dict[int, int] = {}  # version -> round-robin position of its next component
        self.run_id = 0
        self.pareto: list[int] = []
        self.weights: Weights = {}

    # --- scores --------------------------------------------------------------------------------

    def _table(self, version: int, events: Sequence[int]) -> dict[int, float]:
        scored = self.evaluator.scores.get(version, {})
        return {e: scored[e].score for e in events if e in scored}

    def _frontier(self, pareto: Sequence[int]) -> Frontier:
        table = {v: self._table(v, pareto) for v in self.population.pool}
        return pareto_frontier(
            {v: t for v, t in table.items() if t}, self.settings.optimize_epsilon, self.weights
        )

    def _perfect(self, pareto: Sequence[int]) -> bool:
        """Some candidate scores the maximum on every Pareto instance: nothing can beat it."""
        return any(
            len(table) == len(pareto) and all(s >= PERFECT for s in table.values())
            for table in (self._table(v, pareto) for v in self.population.pool)
        )

    # --- the run -------------------------------------------------------------------------------

    async def execute(self) -> RunReport:
        """The run, recorded as finished, failed, or interrupted (Interrupted is raised: a stop
        cut it short, and what it paid for stays cached for the next run); what it spent is
        kept with the prompt's spend however it ends."""
        try:
            return await self._execute()
        finally:
            self.gateway.tell_pending()
            spent = self.gateway.ledger.total()
            keep_spend(
                self.db,
                self.spec.name,
                "optimize",
                datetime.now(UTC),
                SpendTotal(spent.cost_usd, spent.requests, spent.unpriced_requests),
            )

    async def _execute(self) -> RunReport:
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
        self.weights = relative_weights({i.row_id: i.sample_rate for i in window})
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
            report = await interruptible(self._iterate(window), self.guard.interrupt)
        except Interrupted as exc:
            await self._finish("interrupted", await self._left_frontier(), str(exc))
            raise
        except BaseException as exc:
            await self._finish("failed", [], " ".join(str(exc).split())[:500] or type(exc).__name__)
            raise
        await self._finish(report.outcome, report.frontier, report.error)
        return report

    async def _finish(self, outcome: str, frontier: list[int], error: str | None = None) -> None:
        await asyncio.to_thread(
            finish_run,
            self.db,
            self.run_id,
            outcome,
            self.guard.spend.metric_calls,
            self.gateway.ledger.cost_usd(),
            frontier,
            datetime.now(UTC),
            error,
        )

    async def _left_frontier(self) -> list[int]:
        """What a cut-short run leaves the next one to start from: its frontier among what it
        scored, and the versions it had not scored yet (or, cut before it had a pool, the last
        run's frontier): an interruption must not drop candidates."""
        if not self.population.pool:
            return await asyncio.to_thread(latest_frontier, self.db, self.spec.name)
        unscored = {v for v in self.population.pool if not self._table(v, self.pareto)}
        return sorted(set(self._frontier(self.pareto).wins) | unscored)

    async def _start(self, window: list[Instance]) -> tuple[Candidate, list[int], list[int]]:
        """(champion, feedback set, Pareto set), with the pool scored on the Pareto set."""
        fraction = pareto_fraction(
            self.settings.optimize_pareto_fraction, len(window), self.guard.budget.max_metric_calls
        )
        feedback, pareto = split_instances([(i.row_id, i.segment) for i in window], fraction)
        self.pareto = pareto
        everyone = await asyncio.to_thread(candidates_of, self.db, self.spec.name)
        active = [c for c in everyone.values() if c.status == "active"]
        if not active:
            raise SidecarError(f"{self.spec.name}: no active version to improve on")
        champion = active[0]
        last = await asyncio.to_thread(latest_frontier, self.db, self.spec.name)
        barred = await asyncio.to_thread(never_breed, self.db, self.spec.name)
        versions = warm_pool(
            everyone, last, champion.version, self.settings.optimize_warm_pool, barred
        )
        self.population = Population(pool={v: everyone[v] for v in versions}, known=everyone)
        await self.evaluator.recall([c.id for c in everyone.values() if c.id is not None])
        for version in versions:  # the champion first: without it nothing can be compared
            await self.evaluator.scores_for(everyone[version], pareto)
        return champion, feedback, pareto

    async def _iterate(self, window: list[Instance]) -> RunReport:
        champion, feedback, pareto = await self._start(window)
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
        breeder = Breeder(
            self.db,
            self.run_id,
            self.evaluator,
            self.proposer,
            self.guard,
            self.settings.optimize_margin,
            self.weights,
        )
        sampler = MinibatchSampler(feedback, self.settings.optimize_minibatch_size, self.rng)
        while not self.guard.exhausted:
            frontier = self._frontier(pareto)
            if not frontier.candidates:
                break
            if self._perfect(pareto):
                report.stop_reason = NOTHING_TO_LEARN
                break
            report.iterations += 1
            child = await self._step(breeder, frontier, sampler.next(), pareto, report.iterations)
            progressed = False
            if child is not None:
                report.new_versions.append(child)
                scored = await self.evaluator.scores_for(self.population.pool[child], pareto)
                if len(scored) < len(pareto):
                    report.partial[child] = f"scored on {len(scored)} of {len(pareto)}"
                progressed = child in self._frontier(pareto).wins
            self.guard.record_iteration(progressed)
            self._summarise(report, pareto)
            if self.progress is not None:
                self.progress(report)
            if hopeless(self.gateway.failures):
                report.stop_reason = MODEL_ERROR
                break
        self._summarise(report, pareto)
        if self.guard.interrupted:
            raise Interrupted(f"a stop ended the run after {report.iterations} iterations")
        report.stop_reason = report.stop_reason or self.guard.spend.stop_reason or "frontier_empty"
        await self._propose(report, champion.version, pareto)
        report.error = run_failure(
            self.gateway.failures, len(report.new_versions), report.stop_reason
        )
        report.outcome = "finished" if report.error is None else "failed"
        return report

    async def _step(
        self,
        breeder: Breeder,
        frontier: Frontier,
        minibatch: list[int],
        pareto: Sequence[int],
        iteration: int,
    ) -> int | None:
        """One iteration: a merge on its turn (only for prompts of two or more components, and
        only when two contenders exist), else, or when no merge came of it, a reflection. The
        clean child that joined the pool, if any."""
        every = self.settings.optimize_merge_every
        multi = len(self.spec.seed) >= 2
        if every and multi and iteration % every == 0 and len(frontier.contenders) >= 2:
            merged = await breeder.merge(
                self.population, sorted(frontier.contenders), minibatch, self.rng
            )
            if merged is not None:
                return merged.version if merged.version in self.population.pool else None
        parent = self.population.pool[sample_parent(frontier, self.rng)]
        turn = self.turns.get(parent.version, 0)
        self.turns[parent.version] = turn + 1
        component = next_component(list(parent.components), turn)
        attempt = await breeder.reflect(self.population, parent, component, minibatch, pareto)
        if attempt is None:
            return None
        await asyncio.to_thread(record_attempt, self.db, attempt)
        child = attempt.child_version
        if child is None:
            return None
        self.turns[child] = turn + 1  # a child carries on from its parent's next component
        return child if child in self.population.pool else None

    async def _propose(self, report: RunReport, champion: int, pareto: Sequence[int]) -> None:
        """Record evidence for this run's new versions and frontier candidates; those scored
        on the whole Pareto set that beat the champion by the margin become `proposed`."""
        report.held_back = list(self.population.held_back)
        champion_table = self._table(champion, pareto)
        margin = self.settings.optimize_propose_margin
        for version in sorted(set(report.new_versions) | set(report.frontier)):
            if version == champion:
                continue
            evidence = paired_evidence(
                self._table(version, pareto),
                champion_table,
                pareto,
                self.settings.optimize_epsilon,
                self.weights,
            )
            propose, why = proposal_verdict(evidence, margin)
            on_frontier = version in report.frontier
            if propose and on_frontier and self.population.known[version].status == "pool":
                report.proposed.append(version)
            await asyncio.to_thread(
                set_evidence,
                self.db,
                self.spec.name,
                version,
                {
                    "run_id": self.run_id,
                    "judge_version": self.judge.version,
                    "task_version": self.evaluator.key[0],
                    **evidence.as_dict(),
                    "verdict": why if on_frontier else f"off the frontier; {why}",
                },
            )
        if report.proposed:
            await asyncio.to_thread(
                mark_proposed,
                self.db,
                self.spec.name,
                report.proposed,
                f"run {self.run_id}: on the frontier, scored on all {len(pareto)} Pareto events, "
                f"above the champion v{champion} by more than {margin:.3f} (paired)",
                datetime.now(UTC),
            )

    def _summarise(self, report: RunReport, pareto: Sequence[int]) -> None:
        frontier = self._frontier(pareto)
        report.frontier = sorted(frontier.wins)
        report.metric_calls = self.guard.spend.metric_calls
        report.cost_usd = self.gateway.ledger.cost_usd()
        report.champion_score = mean_score(
            self._table(report.champion_version, pareto), self.weights
        )
        means = {
            v: mean_score(self._table(v, pareto), self.weights)
            for v in self.population.pool
            if self._table(v, pareto)
        }
        if means:
            report.best_version = max(means, key=lambda v: (means[v], -v))
            report.best_score = means[report.best_version]
