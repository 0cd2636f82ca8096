"""Making children: a reflective mutation of one component of a parent, or a merge of two
contenders that improved different components. Either way the child must beat its parent(s) on
the same minibatch, replayed and judged the same way, before it joins the pool.

Before anything is paid, a proposal is checked: one that copies a long span of traffic verbatim
is refused (a `mutation_attempt` that says why, which the next reflection on that parent reads),
and one whose text some version already has is not paid for again. A child flagged for subtler
reasons (an instruction found only in traffic) is stored for a person to see, but held back: it
never joins the pool, so it is never a parent and never proposed.

Minibatch totals, and the mean a lineage note shows, weigh each event by the traffic it stands
for (`weights.py`), the same way the acceptance rule does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from sidecar.errors import LlmError
from sidecar.events import components_sha256
from sidecar.optimize.acceptance import accept
from sidecar.optimize.budget import BudgetGuard
from sidecar.optimize.evaluation import Evaluator
from sidecar.optimize.merge import common_ancestor, merged_components
from sidecar.optimize.reflection import InvalidProposal, LineageNote, Proposer, ReflectionExample
from sidecar.optimize.safety import copied_span, flags_for
from sidecar.optimize.weights import Weights, weighted_mean, weighted_total
from sidecar.store.candidates import Scored, insert_candidate, recent_rejections
from sidecar.store.tables import Candidate, MutationAttempt

PERFECT = 1.0
REJECTIONS_SHOWN = 5
LINEAGE_SHOWN = 10


@dataclass
class Population:
    """What a run breeds from: `pool` are the clean candidates it compares, `known` every
    version of the prompt (for lineage and duplicates), `held_back` the flagged children."""

    pool: dict[int, Candidate]
    known: dict[int, Candidate]
    held_back: list[int] = field(default_factory=list)

    def same_text(self, components: dict[str, str]) -> int | None:
        digest = components_sha256(components)
        return next((v for v, c in self.known.items() if c.sha256 == digest), None)


class Breeder:
    """Proposes, screens and scores children of a run's pool on a minibatch."""

    def __init__(
        self,
        db: Engine,
        run_id: int,
        evaluator: Evaluator,
        proposer: Proposer,
        guard: BudgetGuard,
        margin: float,
        weights: Weights | None = None,
    ) -> None:
        self.db = db
        self.run_id = run_id
        self.evaluator = evaluator
        self.proposer = proposer
        self.guard = guard
        self.margin = margin
        self.weights = weights
        self.prompt = evaluator.spec.name
        self.traffic = [
            value for instance in evaluator.instances.values() for value in instance.inputs.values()
        ]

    def _lineage(
        self, population: Population, version: int, pareto: Sequence[int]
    ) -> list[LineageNote]:
        notes: list[LineageNote] = []
        current: int | None = version
        while current is not None and current in population.known and len(notes) < LINEAGE_SHOWN:
            candidate = population.known[current]
            scored = self.evaluator.scores.get(current, {})
            on_pareto = {e: scored[e].score for e in pareto if e in scored}
            notes.append(
                LineageNote(
                    current,
                    _changed_component(candidate, population.known),
                    candidate.mutation_summary or "seed",
                    weighted_mean(on_pareto, self.weights) if on_pareto else None,
                )
            )
            current = candidate.parents[0] if candidate.parents else None
        return list(reversed(notes))

    async def _rejections(self, parent: int) -> list[LineageNote]:
        tried = await asyncio.to_thread(
            recent_rejections, self.db, self.prompt, parent, REJECTIONS_SHOWN
        )
        notes = []
        for attempt in tried:
            summary = attempt.summary
            if attempt.outcome == "rejected":
                summary += (
                    f" (scored {attempt.child_score:.2f} against the parent's "
                    f"{attempt.parent_score:.2f} on its minibatch)"
                )
            notes.append(LineageNote(parent, attempt.component, summary))
        return notes

    async def reflect(
        self,
        population: Population,
        parent: Candidate,
        component: str,
        minibatch: Sequence[int],
        pareto: Sequence[int],
    ) -> MutationAttempt | None:
        """Propose a new text for `component` of `parent`; the attempt, or None when there was
        nothing to learn from or no budget to ask."""
        parent_scores = await self.evaluator.scores_for(parent, minibatch)
        if len(parent_scores) < len(minibatch):
            return None
        if all(s.score >= PERFECT for s in parent_scores.values()):
            return None  # nothing to learn from a perfect minibatch (GEPA skips it too)
        if not self.guard.reflection_affordable():
            return None
        instances = self.evaluator.instances
        examples = [
            ReflectionExample(instances[e].inputs, s.output, s.score, s.feedback)
            for e, s in parent_scores.items()
        ]
        attempt = MutationAttempt(
            prompt_name=self.prompt,
            run_id=self.run_id,
            parent_version=parent.version,
            component=component,
            summary="",
            outcome="failed",
            parent_score=weighted_total(_table(parent_scores), self.weights),
            created_at=datetime.now(UTC),
        )
        spent = self.evaluator.gateway.ledger.cost_usd("reflection")
        try:
            proposal = await self.proposer.propose(
                component,
                parent.components[component],
                examples,
                self._lineage(population, parent.version, pareto),
                await self._rejections(parent.version),
                rubric=self.evaluator.judge.rubric,
            )
        except (InvalidProposal, LlmError) as exc:
            attempt.summary = f"no usable proposal: {exc}"[:300]
            return attempt
        finally:
            self.guard.record_usd(self.evaluator.gateway.ledger.cost_usd("reflection") - spent)
        attempt.summary, attempt.text = proposal.summary, proposal.text
        child = {**parent.components, component: proposal.text}
        if self._refused(attempt, child, parent, population):
            return attempt
        child_scores = await self.evaluator.pay(child, minibatch)
        if len(child_scores) < len(minibatch):
            # the next reflection on this parent reads why: a spent budget, or a provider
            # that failed some evaluations (the text itself may be fine)
            attempt.summary += (
                " (not scored: budget spent)"
                if self.guard.exhausted
                else f" (not scored: {len(minibatch) - len(child_scores)} of {len(minibatch)} "
                "minibatch evaluations failed)"
            )
            return attempt
        attempt.child_score = weighted_total(_table(child_scores), self.weights)
        if not accept(_table(parent_scores), _table(child_scores), self.margin, self.weights):
            attempt.outcome = "rejected"
            return attempt
        candidate = await self._add(population, child, [parent.version], proposal.summary, parent)
        await self.evaluator.keep(candidate, child_scores)
        attempt.outcome, attempt.child_version = "accepted", candidate.version
        return attempt

    def _refused(
        self,
        attempt: MutationAttempt,
        child: dict[str, str],
        parent: Candidate,
        population: Population,
    ) -> bool:
        """Screen a proposal before paying for it: copied traffic, or a text already known."""
        span = copied_span(
            attempt.text or "", self.traffic, already=parent.components[attempt.component]
        )
        if span is not None:
            attempt.outcome = "refused"
            # the reply's own change line may quote that traffic: the summary the next
            # reflection reads says only what went wrong (the proposal stays in `text`)
            attempt.summary = (
                f"refused unscored: it copied {len(span)}+ characters of user text verbatim "
                "into the instruction; never copy what users wrote"
            )
            return True
        same = population.same_text(child)
        if same is not None:
            attempt.outcome = "duplicate"
            attempt.summary += f" (not scored: the same text as v{same})"
            return True
        return False

    async def _add(
        self,
        population: Population,
        components: dict[str, str],
        parents: list[int],
        summary: str,
        base: Candidate,
    ) -> Candidate:
        """A new version, flagged where needed: in the pool when clean, held back when not."""
        flags = flags_for(components, dict(base.components), self.traffic)
        candidate = await asyncio.to_thread(
            insert_candidate,
            self.db,
            self.prompt,
            components,
            parents,
            self.run_id,
            summary,
            flags,
            datetime.now(UTC),
        )
        population.known[candidate.version] = candidate
        if flags:
            population.held_back.append(candidate.version)
        else:
            population.pool[candidate.version] = candidate
        return candidate

    async def merge(
        self,
        population: Population,
        contenders: Sequence[int],
        minibatch: Sequence[int],
        rng: random.Random,
    ) -> Candidate | None:
        """Try merges of two contenders (nearest common ancestor taken from every known
        version, so a warm pool's ancestry resolves); the merged child when one is accepted."""
        lineage = {v: list(c.parents) for v, c in population.known.items()}
        versions = sorted(v for v in contenders if v in population.pool)
        pairs = [(a, b) for i, a in enumerate(versions) for b in versions[i + 1 :]]
        rng.shuffle(pairs)
        pool = population.pool
        for a, b in pairs:
            ancestor = common_ancestor(a, b, lineage)
            if ancestor is None or ancestor in (a, b) or ancestor not in population.known:
                continue
            merged = merged_components(
                population.known[ancestor].components, pool[a].components, pool[b].components
            )
            if merged is None or population.same_text(merged) is not None:
                continue
            parent_a = await self.evaluator.scores_for(pool[a], minibatch)
            parent_b = await self.evaluator.scores_for(pool[b], minibatch)
            if len(parent_a) < len(minibatch) or len(parent_b) < len(minibatch):
                return None
            child = await self.evaluator.pay(merged, minibatch)
            if len(child) < len(minibatch):
                return None
            best = max(
                (_table(parent_a), _table(parent_b)),
                key=lambda t: weighted_total(t, self.weights),
            )
            if not accept(best, _table(child), self.margin, self.weights):
                return None
            summary = f"merged v{a} and v{b} (common ancestor v{ancestor})"
            candidate = await self._add(population, merged, [a, b], summary, pool[a])
            await self.evaluator.keep(candidate, child)
            return candidate
        return None


def _table(scored: dict[int, Scored]) -> dict[int, float]:
    return {event: s.score for event, s in scored.items()}


def _changed_component(candidate: Candidate, known: dict[int, Candidate]) -> str:
    """Which component this candidate changed from its first parent (or `seed`)."""
    if not candidate.parents or candidate.parents[0] not in known:
        return "seed"
    parent = known[candidate.parents[0]].components
    changed = [name for name, text in candidate.components.items() if parent.get(name) != text]
    return ", ".join(sorted(changed)) or "nothing"
