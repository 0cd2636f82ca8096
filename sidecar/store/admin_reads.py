"""What the admin page reads beyond the API's views: the live score over time (production's
judgments: a monitor, never a candidate's baseline) and samples of the judge's feedback on a
candidate's replays. Each call is one bounded read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from sidecar.store.database import aware
from sidecar.store.repository import transaction
from sidecar.store.tables import Candidate, Evaluation, Event, Judgment

TREND_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class FeedbackSample:
    inputs: dict[str, str]
    output: str
    score: float
    feedback: str


def versions_in(engine: Engine, prompt_name: str, status: str) -> list[int]:
    """The prompt's versions in `status`, oldest first."""
    query = (
        select(Candidate.version)
        .where(Candidate.prompt_name == prompt_name, Candidate.status == status)
        .order_by(Candidate.version)  # type: ignore[arg-type]
    )
    with transaction(engine) as connection:
        return [int(version) for (version,) in connection.execute(query)]


def live_scores(
    engine: Engine, prompt_name: str, since: datetime, limit: int = TREND_ROWS
) -> list[tuple[datetime, float, int]]:
    """(traffic time, score, version that answered) of the newest `limit` live judgments of
    events received since `since` (the (prompt, received_at) index bounds the read), oldest
    first."""
    query = (
        select(Event.timestamp, Judgment.score, Judgment.prompt_version)
        .join(Judgment, Judgment.event_row_id == Event.id)  # type: ignore[arg-type]
        .where(
            Event.prompt_name == prompt_name,
            Event.received_at >= since,
            Judgment.status == "ok",
            Judgment.score.is_not(None),  # type: ignore[union-attr]
        )
        .order_by(Event.received_at.desc())  # type: ignore[attr-defined]
        .limit(limit)
    )
    with transaction(engine) as connection:
        rows = [(aware(at), float(score), int(v)) for at, score, v in connection.execute(query)]
    return sorted(rows)


def feedback_samples(
    engine: Engine, prompt_name: str, version: int, each: int = 3
) -> tuple[list[FeedbackSample], list[FeedbackSample]]:
    """The judge's feedback on the `each` lowest- and highest-scored replays of a version
    (the worst first, then the best first): what a person reads before approving."""
    base = (
        select(Event.inputs, Evaluation.output, Evaluation.score, Evaluation.feedback)
        .join(Candidate, Candidate.id == Evaluation.candidate_id)  # type: ignore[arg-type]
        .join(Event, Event.id == Evaluation.event_row_id)  # type: ignore[arg-type]
        .where(
            Candidate.prompt_name == prompt_name,
            Candidate.version == version,
            Evaluation.feedback.is_not(None),  # type: ignore[union-attr]
        )
    )
    with transaction(engine) as connection:
        worst = connection.execute(
            base.order_by(Evaluation.score, Evaluation.id).limit(each)  # type: ignore[arg-type]
        ).all()
        best = connection.execute(
            base.order_by(Evaluation.score.desc(), Evaluation.id).limit(each)  # type: ignore[attr-defined,arg-type]
        ).all()
    worst_samples = [FeedbackSample(dict(i), o, float(s), str(f)) for i, o, s, f in worst]
    shown = {(s.output, s.score, s.feedback) for s in worst_samples}
    best_samples = [
        sample
        for sample in (FeedbackSample(dict(i), o, float(s), str(f)) for i, o, s, f in best)
        if (sample.output, sample.score, sample.feedback) not in shown
    ]
    return worst_samples, best_samples
