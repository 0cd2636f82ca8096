"""How far to trust a judge: its agreement with human labels (accuracy, Cohen's kappa, the
confusion matrix), so a team can fix its rubric before letting it steer optimization.

Labels are numbers in 0..1 (true/false and pass/fail/good/bad read as 1/0). Their distinct values
are the categories, e.g. {0, 1} or {0, 0.5, 1}; a judge score counts as the nearest category.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.errors import InputError

_WORDS = {"pass": 1.0, "good": 1.0, "yes": 1.0, "fail": 0.0, "bad": 0.0, "no": 0.0}


@dataclass(frozen=True)
class LabeledExample:
    inputs: dict[str, str]
    output: str
    label: float
    trace: dict[str, Any] | None = None


@dataclass(frozen=True)
class Agreement:
    categories: list[float]
    confusion: list[list[int]]  # rows: human label, columns: judge
    n: int
    accuracy: float
    kappa: float | None
    mean_abs_error: float
    errors: int = 0
    disagreements: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "kappa": self.kappa,
            "mean_abs_error": self.mean_abs_error,
            "categories": self.categories,
            "confusion": self.confusion,
            "judge_errors": self.errors,
            "disagreements": self.disagreements,
        }


def _label(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    if isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return float(value)
    raise ValueError(f"label must be 0..1, true/false or pass/fail, not {value!r}")


def read_labels(path: Path) -> list[LabeledExample]:
    """Read a JSONL file of `{"inputs": {...}, "output": "...", "label": ...}`; one-line errors."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--labels: cannot read {path}: {exc}") from None
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("each line must be a JSON object")
            inputs = row.get("inputs")
            if not isinstance(inputs, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()
            ):
                raise ValueError("inputs must be an object of strings")
            if not isinstance(row.get("output"), str):
                raise ValueError("output must be a string")
            if "label" not in row:
                raise ValueError("label is missing")
            trace = row.get("trace")
            examples.append(
                LabeledExample(
                    inputs,
                    row["output"],
                    _label(row["label"]),
                    trace if isinstance(trace, dict) else None,
                )
            )
        except ValueError as exc:
            raise InputError(f"--labels: {path}:{number}: {exc}") from None
    if not examples:
        raise InputError(f"--labels: {path} holds no labeled examples")
    return examples


def nearest(value: float, categories: Sequence[float]) -> float:
    """The category closest to `value`; ties go to the lower one."""
    return min(categories, key=lambda category: (abs(category - value), category))


def cohen_kappa(confusion: Sequence[Sequence[int]]) -> float | None:
    """Cohen's kappa, (p_o - p_e) / (1 - p_e); None when chance agreement is already total."""
    n = sum(sum(row) for row in confusion)
    if n == 0:
        return None
    size = len(confusion)
    observed = sum(confusion[i][i] for i in range(size)) / n
    rows = [sum(confusion[i]) / n for i in range(size)]
    columns = [sum(confusion[i][j] for i in range(size)) / n for j in range(size)]
    expected = sum(rows[i] * columns[i] for i in range(size))
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1.0 - expected)


def agreement(
    labels: Sequence[float],
    scores: Sequence[float | None],
    examples: Sequence[LabeledExample] | None = None,
) -> Agreement:
    """Compare judge scores with human labels; a None score (the judge failed) is counted apart."""
    categories = sorted(set(labels))
    if len(categories) == 1:
        categories = sorted({0.0, 1.0} | set(categories))
    index = {category: i for i, category in enumerate(categories)}
    confusion = [[0] * len(categories) for _ in categories]
    errors = 0
    absolute = 0.0
    disagreements = []
    for position, (label, score) in enumerate(zip(labels, scores, strict=True)):
        if score is None:
            errors += 1
            continue
        judged = nearest(score, categories)
        confusion[index[label]][index[judged]] += 1
        absolute += abs(score - label)
        if judged != label and examples is not None:
            example = examples[position]
            disagreements.append(
                {
                    "example": position + 1,
                    "label": label,
                    "score": score,
                    "output": example.output[:200],
                }
            )
    n = sum(sum(row) for row in confusion)
    correct = sum(confusion[i][i] for i in range(len(categories)))
    return Agreement(
        categories=categories,
        confusion=confusion,
        n=n,
        accuracy=correct / n if n else 0.0,
        kappa=cohen_kappa(confusion),
        mean_abs_error=absolute / n if n else 0.0,
        errors=errors,
        disagreements=disagreements,
    )
