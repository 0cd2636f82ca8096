"""What the reading commands learn from the database alone, with no config file: the prompts it
knows, the evaluation key their versions were last replayed under, and each version's live mean
(production's judgments of what it answered: a monitor, never a candidate's baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from sidecar.store.repository import transaction
from sidecar.store.tables import Candidate, Evaluation, Judgment


@dataclass(frozen=True)
class LiveMean:
    """The mean score the judge gave a version's production answers, under one judge version."""

    mean: float
    judged: int
    judge_version: str


def prompt_names(engine: Engine) -> list[str]:
    """Every prompt the database holds a version of (seeded by `run` from its config file)."""
    query = select(Candidate.prompt_name).distinct().order_by(Candidate.prompt_name)
    with transaction(engine) as connection:
        return [str(name) for (name,) in connection.execute(query)]


def latest_evaluation_key(engine: Engine, prompt_name: str) -> tuple[str, str] | None:
    """(task version, judge version) of the prompt's newest replayed evaluation: the key its
    means are read under when no config file says which key is current. Every mean under one
    key compares like for like. None when no version was ever replayed."""
    query = (
        select(Evaluation.task_version, Evaluation.judge_version)
        .join(Candidate, Candidate.id == Evaluation.candidate_id)  # type: ignore[arg-type]
        .where(Candidate.prompt_name == prompt_name)
        .order_by(Evaluation.id.desc())  # type: ignore[union-attr]
        .limit(1)
    )
    with transaction(engine) as connection:
        found = connection.execute(query).first()
    return None if found is None else (str(found[0]), str(found[1]))


def latest_judge_version(engine: Engine, prompt_name: str) -> str | None:
    """The judge version of the prompt's newest successful live judgment, if any."""
    query = (
        select(Judgment.judge_version)
        .where(Judgment.prompt_name == prompt_name, Judgment.status == "ok")
        .order_by(Judgment.id.desc())  # type: ignore[union-attr]
        .limit(1)
    )
    with transaction(engine) as connection:
        return connection.execute(query).scalar_one_or_none()


def live_means(engine: Engine, prompt_name: str, judge_version: str) -> dict[int, LiveMean]:
    """Version → the mean of its judged production events under `judge_version` (one judge, so
    an event re-judged by a newer judge version counts once)."""
    query = (
        select(Judgment.prompt_version, func.avg(Judgment.score), func.count(Judgment.id))
        .where(
            Judgment.prompt_name == prompt_name,
            Judgment.judge_version == judge_version,
            Judgment.status == "ok",
            Judgment.score.is_not(None),  # type: ignore[union-attr]
        )
        .group_by(Judgment.prompt_version)
    )
    with transaction(engine) as connection:
        return {
            int(version): LiveMean(float(mean), int(n), judge_version)
            for version, mean, n in connection.execute(query)
        }
