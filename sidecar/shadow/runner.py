"""One shadow pass over a prompt: the evidence the gate reads, collected on traffic that no
optimization run has seen.

Each candidate in `shadow` (topped up from the best `proposed` ones, up to
`shadow_candidates` at once) and the champion (the `active` version) are both replayed through
the same task path and judged the same way on the events received after the candidate was
created, oldest first: like for like, never against production's live judgments. Replays go
through the optimizer's `Evaluator`, so they are cached under the same key and the champion's
are paid once for every candidate and every pass. In pairwise mode the judge also compares the
two answers side by side (both orders), a verdict cached like an evaluation.

A pass has its own budget (metric calls, USD, wall time); what it cuts is collected by the next
pass. The gate then decides: pass -> `awaiting_approval` with the evidence, fail ->
`rejected`, else the figures so far are stored and the candidate keeps collecting until its
deadline (or until `shadow_max_pairs` pairs, after which no new evidence will come).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from sidecar.errors import LlmError
from sidecar.ingest.sampling import event_weight
from sidecar.judge.judge import judge_for
from sidecar.judge.verdict import InvalidReply
from sidecar.llm.gateway import Gateway
from sidecar.metrics import Metrics
from sidecar.optimize.budget import Budget, BudgetGuard
from sidecar.optimize.evaluation import Evaluator
from sidecar.optimize.interrupt import Interrupt, Interrupted, interruptible
from sidecar.promote.lifecycle import Actor, Status
from sidecar.settings import PromptSpec, Settings
from sidecar.shadow.gate import GateDecision, GateRules, Pair, decide
from sidecar.store.candidates import Scored, candidates_of
from sidecar.store.database import aware
from sidecar.store.model_errors import StoredFailures
from sidecar.store.promotions import transition
from sidecar.store.shadow import (
    Compared,
    FreshEvent,
    cached_comparisons,
    entered_shadow,
    fresh_events,
    keep_shadow_figures,
    store_comparisons,
)
from sidecar.store.spend import SpendTotal, keep_spend
from sidecar.store.tables import Candidate

log = logging.getLogger(__name__)

RUNNER = "shadow"
"""Who the shadow runner's audit rows name."""

POINTS = {"a": (1.0, 0.0), "b": (0.0, 1.0), "tie": (0.5, 0.5)}
"""A pairwise verdict as (candidate, champion) points: the candidate is shown as `a`."""


def shadow_budget(settings: Settings) -> Budget:
    return Budget(
        max_metric_calls=settings.shadow_max_metric_calls,
        max_usd=settings.shadow_budget_usd,
        max_seconds=settings.run_max_seconds,
    )


def admission_order(proposed: Sequence[Candidate]) -> list[Candidate]:
    """Proposed candidates, the best first: by the optimizer's Pareto mean, then the newest."""
    return sorted(
        proposed,
        key=lambda c: (-float((c.evidence or {}).get("pareto_mean", 0.0)), -c.version),
    )


@dataclass
class CandidateOutcome:
    """What the pass did with one candidate, for a person and for `--json`."""

    version: int
    status_before: str
    status_after: str
    pairs: int
    mean_delta: float | None
    p_value: float | None
    decision: str
    reason: str


@dataclass
class ShadowReport:
    """One prompt's pass: the champion, each candidate's outcome, and what the pass paid."""

    prompt: str
    mode: str
    champion_version: int | None
    candidates: list[CandidateOutcome] = field(default_factory=list)
    metric_calls: int = 0
    cost_usd: float = 0.0
    stop_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ShadowPass:
    """Run with `await ShadowPass(...).execute()`; `clock` says when "now" is (deadlines);
    setting `interrupt` ends the pass at its next step."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        spec: PromptSpec,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = _utcnow,
        interrupt: Interrupt | None = None,
    ) -> None:
        self.db = engine
        self.settings = settings
        self.spec = spec
        self.metrics = metrics
        self.clock = clock
        self.gateway = Gateway(settings, sink=StoredFailures(engine))
        self.judge = judge_for(self.gateway, spec)
        self.guard = BudgetGuard(shadow_budget(settings), interrupt=interrupt)
        self.evaluator = Evaluator(engine, self.gateway, self.judge, spec, self.guard)
        self.rules = GateRules.from_settings(settings)

    async def execute(self) -> ShadowReport:
        """The pass; Interrupted when a stop cut it short: the candidates it had not decided
        wait for the next pass, and the replays it paid for are cached. What it spent is kept
        with the prompt's spend however it ends."""
        try:
            return await interruptible(self._execute(), self.guard.interrupt)
        finally:
            self.gateway.tell_pending()
            spent = self.gateway.ledger.total()
            keep_spend(
                self.db,
                self.spec.name,
                "shadow",
                self.clock(),
                SpendTotal(spent.cost_usd, spent.requests, spent.unpriced_requests),
            )

    async def _execute(self) -> ShadowReport:
        name, now = self.spec.name, self.clock()
        report = ShadowReport(name, self.settings.shadow_mode, None)
        everyone = await asyncio.to_thread(candidates_of, self.db, name)
        champion = next((c for c in everyone.values() if c.status == Status.ACTIVE), None)
        if champion is None:
            log.info("shadow %s: no active version to compare with; nothing to do", name)
            return report
        report.champion_version = champion.version
        shadowed = await self._admit(everyone, champion, now)
        events = {
            c.version: await asyncio.to_thread(
                fresh_events, self.db, name, aware(c.created_at), self.settings.shadow_max_pairs
            )
            for c in shadowed
        }
        self.evaluator.instances = {e.row_id: e for chosen in events.values() for e in chosen}
        await self.evaluator.recall([c.id for c in (champion, *shadowed) if c.id is not None])
        entered = await asyncio.to_thread(
            entered_shadow, self.db, name, [c.version for c in shadowed]
        )
        for candidate in shadowed:
            started = entered.get(candidate.version, aware(candidate.created_at))
            offered = events[candidate.version]
            pairs = await self._collect(candidate, champion, offered)
            if self.guard.interrupted:
                raise Interrupted(f"a stop ended the pass before v{candidate.version} was decided")
            outcome = await self._decide(candidate, champion, pairs, len(offered), started, now)
            report.candidates.append(outcome)
        self._gauge(report)
        report.metric_calls = self.guard.spend.metric_calls
        report.cost_usd = self.gateway.ledger.cost_usd()
        report.stop_reason = self.guard.spend.stop_reason
        return report

    async def _admit(
        self, everyone: dict[int, Candidate], champion: Candidate, now: datetime
    ) -> list[Candidate]:
        """The candidates in shadow, oldest version first, after moving the best proposed ones
        in while there is room; each as the pass found it (its `status` is the one before)."""
        shadowed = [c for c in everyone.values() if c.status == Status.SHADOW]
        room = self.settings.shadow_candidates - len(shadowed)
        proposed = [c for c in everyone.values() if c.status == Status.PROPOSED]
        for candidate in admission_order(proposed)[: max(room, 0)]:
            reason = (
                f"paired against the champion v{champion.version} on traffic received after "
                f"v{candidate.version} was created"
            )
            moved = await asyncio.to_thread(
                transition,
                self.db,
                self.spec.name,
                candidate.version,
                Status.SHADOW,
                actor=Actor.SHADOW,
                by=RUNNER,
                reason=reason,
                now=now,
            )
            if moved:
                shadowed.append(candidate)
        return sorted(shadowed, key=lambda c: c.version)

    async def _collect(
        self, candidate: Candidate, champion: Candidate, events: Sequence[FreshEvent]
    ) -> list[Pair]:
        """The pairs the budget allows: the champion's replays first (shared with every other
        candidate), then the candidate's on the events the champion has, then, in pairwise
        mode, the judge's side-by-side verdicts. Each pair weighs 1/its event's sample rate."""
        ids = [event.row_id for event in events]
        theirs = await self.evaluator.scores_for(champion, ids)
        ours = await self.evaluator.scores_for(candidate, [e for e in ids if e in theirs])
        both = [event for event in events if event.row_id in ours]
        if self.settings.shadow_mode == "pointwise":
            points = {e.row_id: (ours[e.row_id].score, theirs[e.row_id].score) for e in both}
        else:
            verdicts = await self._compare(candidate, champion, both, ours, theirs)
            points = {event: POINTS[verdict.winner] for event, verdict in verdicts.items()}
        return [
            Pair(event.segment, *points[event.row_id], event_weight(event.sample_rate))
            for event in both
            if event.row_id in points
        ]

    async def _compare(
        self,
        candidate: Candidate,
        champion: Candidate,
        events: Sequence[FreshEvent],
        ours: dict[int, Scored],
        theirs: dict[int, Scored],
    ) -> dict[int, Compared]:
        """Pairwise verdicts on `events`: cached, free when both answers are the same words (a
        tie), else asked for as the budget allows (a comparison counts as one metric call)."""
        assert candidate.id is not None and champion.id is not None
        key = self.evaluator.key
        ids = [event.row_id for event in events]
        verdicts = await asyncio.to_thread(
            cached_comparisons, self.db, candidate.id, champion.id, ids, key
        )
        for event in ids:
            if event not in verdicts and ours[event].output == theirs[event].output:
                verdicts[event] = Compared("tie", "the same answer")
        pending = [event for event in events if event.row_id not in verdicts]
        paid: dict[int, Compared] = {}
        while pending:
            allowed = self.guard.affordable(len(pending))
            if not allowed:
                break
            todo, pending = pending[:allowed], pending[allowed:]
            before = self.gateway.ledger.cost_usd("judge")
            results = await asyncio.gather(
                *(self._verdict(e, ours[e.row_id], theirs[e.row_id]) for e in todo)
            )
            self.guard.record_calls(len(todo), self.gateway.ledger.cost_usd("judge") - before)
            paid.update({e.row_id: r for e, r in zip(todo, results, strict=True) if r})
        await asyncio.to_thread(
            store_comparisons, self.db, candidate.id, champion.id, key, paid, self.clock()
        )
        return {**verdicts, **paid}

    async def _verdict(self, event: FreshEvent, ours: Scored, theirs: Scored) -> Compared | None:
        try:
            result = await self.judge.compare(event.inputs, ours.output, theirs.output)
        except LlmError as exc:  # the gateway tells model failures, a line a minute at most
            log.debug("pairwise comparison on event %d failed: %s", event.row_id, exc)
            return None
        except InvalidReply as exc:
            log.warning("pairwise comparison on event %d failed: %s", event.row_id, exc)
            return None
        return Compared(result.winner, " | ".join(result.feedback))

    async def _decide(
        self,
        candidate: Candidate,
        champion: Candidate,
        pairs: list[Pair],
        offered: int,
        started: datetime,
        now: datetime,
    ) -> CandidateOutcome:
        """Ask the gate, then move the candidate (or store its figures so far). A decision
        taken while some fresh events have no pair (a replay or verdict failed, or the budget
        ran out) says so in its reason, and the figures count them."""
        settings = self.settings
        deadline = started + timedelta(hours=settings.shadow_deadline_hours)
        exhausted = len(pairs) >= settings.shadow_max_pairs
        decision = decide(pairs, self.rules, deadline_passed=now >= deadline or exhausted)
        unpaired = offered - len(pairs)
        if unpaired and decision.outcome != "wait":
            reason = (
                f"{decision.reason}; decided on {len(pairs)} of {offered} fresh events "
                f"({unpaired} unpaired: a replay or verdict failed, or the budget ran out)"
            )
            decision = replace(
                decision, reason=reason, figures={**decision.figures, "reason": reason}
            )
        figures = {
            **self._figures(decision, candidate, champion, started, deadline),
            "events": offered,
            "unpaired": unpaired,
        }
        after = await self._apply(candidate, decision, figures, now)
        outcome = CandidateOutcome(
            version=candidate.version,
            status_before=candidate.status,
            status_after=after,
            pairs=len(pairs),
            mean_delta=_number(decision.figures["mean_delta"]),
            p_value=_number(decision.figures["p_value"]),
            decision=decision.outcome,
            reason=decision.reason,
        )
        delta = "n/a" if outcome.mean_delta is None else f"{outcome.mean_delta:+.3f}"
        log.info(
            "shadow %s v%d vs champion v%d: %d pairs, mean delta %s, p=%s: %s -> %s (%s)",
            self.spec.name,
            candidate.version,
            champion.version,
            outcome.pairs,
            delta,
            "n/a" if outcome.p_value is None else f"{outcome.p_value:.2g}",
            decision.outcome,
            after,
            decision.reason,
        )
        return outcome

    def _figures(
        self,
        decision: GateDecision,
        candidate: Candidate,
        champion: Candidate,
        started: datetime,
        deadline: datetime,
    ) -> dict[str, Any]:
        """The gate's figures and where they come from, as evidence["shadow"] stores them."""
        task_version, judge_version = self.evaluator.key
        return {
            **decision.figures,
            "mode": self.settings.shadow_mode,
            "champion_version": champion.version,
            "started_at": started.isoformat(),
            "deadline": deadline.isoformat(),
            "events_from": aware(candidate.created_at).isoformat(),
            "max_pairs": self.settings.shadow_max_pairs,
            "task_version": task_version,
            "judge_version": judge_version,
        }

    async def _apply(
        self, candidate: Candidate, decision: GateDecision, figures: dict[str, Any], now: datetime
    ) -> str:
        """The candidate's status after the decision: moved, or kept with its figures; a
        version someone else moved meanwhile is left where they put it."""
        name, version = self.spec.name, candidate.version
        if decision.outcome == "wait":
            kept = await asyncio.to_thread(keep_shadow_figures, self.db, name, version, figures)
            if kept:
                return Status.SHADOW.value
        else:
            target = Status.AWAITING_APPROVAL if decision.outcome == "pass" else Status.REJECTED
            moved = await asyncio.to_thread(
                transition,
                self.db,
                name,
                version,
                target,
                actor=Actor.SHADOW,
                by=RUNNER,
                reason=decision.reason,
                now=now,
                evidence={"shadow": figures},
            )
            if moved:
                return target.value
        current = await asyncio.to_thread(candidates_of, self.db, name)
        return current[version].status

    def _gauge(self, report: ShadowReport) -> None:
        """Score delta and pairs for the versions still in shadow; the series of every other
        version of this prompt are removed, so label values stay bounded."""
        if self.metrics is None:
            return
        prompt = self.metrics.prompt_label(self.spec.name)
        staying = {o.version: o for o in report.candidates if o.status_after == Status.SHADOW}
        for version, outcome in staying.items():
            self.metrics.shadow_pairs.labels(prompt, str(version)).set(outcome.pairs)
            delta = self.metrics.shadow_score_delta
            if outcome.mean_delta is None:
                delta.remove(prompt, str(version))
            else:
                delta.labels(prompt, str(version)).set(outcome.mean_delta)
        for gauge in (self.metrics.shadow_pairs, self.metrics.shadow_score_delta):
            for metric in gauge.collect():
                for sample in metric.samples:
                    labels = sample.labels
                    if labels["prompt"] == prompt and int(labels["version"]) not in staying:
                        gauge.remove(prompt, labels["version"])


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
