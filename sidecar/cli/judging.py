"""`judge-eval`: how far to trust the judge, measured against human labels before GEPA leans
on its scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sidecar.cli.common import JsonFlag, prompt_spec
from sidecar.settings import load_settings


def register(cli: typer.Typer) -> None:
    """Adds this module's commands to `cli`, in the order `--help` lists them."""
    cli.command("judge-eval")(judge_eval)


def judge_eval(
    labels: Annotated[
        Path, typer.Option(help='JSONL: {"inputs": {...}, "output": "...", "label": 0..1}.')
    ],
    prompt: Annotated[
        str | None, typer.Option(help="Whose rubric to use (needed when several are managed).")
    ] = None,
    min_kappa: Annotated[
        float | None, typer.Option(help="Exit 1 when Cohen's kappa is below this (for CI).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """How well the judge agrees with human labels: accuracy, Cohen's kappa, confusion matrix;
    exit 1 when the judge could score none of them."""
    from sidecar.judge.agreement import agreement, read_labels
    from sidecar.judge.judge import judge_for, score_all
    from sidecar.llm.gateway import Gateway
    from sidecar.llm.loop_clients import run_with_models

    settings = load_settings()
    spec = prompt_spec(settings, prompt)
    name = spec.name if spec else None
    examples = read_labels(labels)
    judge = judge_for(Gateway(settings), spec)
    problems: list[str] = []
    items = [(e.inputs, e.output, e.trace) for e in examples]
    verdicts = run_with_models(score_all(judge, items, problems))
    result = agreement(
        [example.label for example in examples],
        [verdict.score if verdict is not None else None for verdict in verdicts],
        examples,
    )
    report = {"prompt": name, "judge_version": judge.version, **result.as_dict()}
    if json_output:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        typer.echo(_format_agreement(report))
    if result.n == 0 and problems:
        typer.echo(
            f"error: judge-eval: the judge scored none of the {len(examples)} examples; "
            f"the last error: {problems[-1]}",
            err=True,
        )
        raise typer.Exit(1)
    if min_kappa is not None and result.kappa is None:
        typer.echo(
            f"error: kappa is undefined (the labels or the judge's scores are all one "
            f"category), so it cannot reach --min-kappa {min_kappa}",
            err=True,
        )
        raise typer.Exit(1)
    if min_kappa is not None and result.kappa is not None and result.kappa < min_kappa:
        typer.echo(f"error: kappa {result.kappa} is below --min-kappa {min_kappa}", err=True)
        raise typer.Exit(1)


def _format_agreement(report: dict[str, Any]) -> str:
    """The report for a person: `undefined` or `n/a` where a number cannot be had, never None."""
    kappa = "undefined" if report["kappa"] is None else f"{report['kappa']:.3f}"
    judged = report["n"] > 0
    accuracy = f"{report['accuracy']:.3f}" if judged else "n/a (nothing judged)"
    mae = f"{report['mean_abs_error']:.3f}" if judged else "n/a (nothing judged)"
    prompt = report["prompt"] or "none (the default rubric)"
    categories = report["categories"]
    lines = [
        f"judge      {report['judge_version']}  prompt={prompt}",
        f"examples   n={report['n']}  judge_errors={report['judge_errors']}",
        f"accuracy   {accuracy}",
        f"kappa      {kappa}",
        f"mae        {mae}",
        "confusion  rows: human label, columns: judge",
        "           " + "".join(f"{category:>8g}" for category in categories),
    ]
    for category, row in zip(categories, report["confusion"], strict=True):
        lines.append(f"   {category:>8g}" + "".join(f"{count:>8d}" for count in row))
    return "\n".join(lines)
