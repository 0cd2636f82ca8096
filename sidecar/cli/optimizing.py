"""`optimize`: one GEPA run on demand, with a live bar on a terminal and a line per iteration
in logs. `shadow`: one shadow pass on demand, a line per candidate."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import typer

from sidecar.cli.common import JsonFlag, PromptOption, configure_logging, database, required_spec
from sidecar.runtime.progress import run_with_progress_bar
from sidecar.settings import load_settings

if TYPE_CHECKING:
    from sidecar.optimize.engine import RunReport


def register(cli: typer.Typer) -> None:
    """Adds this module's commands to `cli`, in the order `--help` lists them."""
    cli.command()(optimize)
    cli.command()(shadow)


def optimize(prompt: PromptOption = None, json_output: JsonFlag = False) -> None:
    """One GEPA run now over the prompt's recent judged traffic, within the run budget; exit 1
    when its models failed so that it could propose nothing."""
    from sidecar.llm.loop_clients import run_with_models
    from sidecar.optimize.engine import OptimizationRun

    settings = load_settings()
    spec = required_spec(settings, prompt)
    configure_logging()
    engine = database(settings)

    def line(report: RunReport) -> None:
        typer.echo(
            f"iteration {report.iterations:>3}  metric calls {report.metric_calls}/"
            f"{settings.run_max_metric_calls}  cost ${report.cost_usd:.4f}  "
            f"best v{report.best_version} {report.best_score:.3f}  frontier {len(report.frontier)}",
            err=True,
        )

    run = OptimizationRun(engine, settings, spec)
    try:
        if sys.stderr.isatty():
            report = run_with_progress_bar(run, settings.run_max_metric_calls)
        else:  # logs (a pod, CI): one line per iteration
            run.progress = line
            report = run_with_models(run.execute())
    finally:
        engine.dispose()
    if json_output:
        typer.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        typer.echo(_summary(report))
    if report.outcome == "failed":
        typer.echo(f"error: optimize: {report.error}", err=True)
        raise typer.Exit(1)


def _summary(report: RunReport) -> str:
    return (
        f"run {report.run_id}: {report.iterations} iterations, stopped by {report.stop_reason}; "
        f"{report.metric_calls} metric calls, ${report.cost_usd:.4f}\n"
        f"champion v{report.champion_version} {report.champion_score:.3f} on the Pareto set "
        f"({report.pareto_size} events); best v{report.best_version} {report.best_score:.3f}\n"
        f"frontier {', '.join(f'v{v}' for v in report.frontier)}; "
        f"proposed {', '.join(f'v{v}' for v in report.proposed) or 'none'}"
        + (
            f"\nheld back (flagged, see `show`): {', '.join(f'v{v}' for v in report.held_back)}"
            if report.held_back
            else ""
        )
    )


def shadow(prompt: PromptOption = None, json_output: JsonFlag = False) -> None:
    """One shadow pass now: candidates and the champion replayed on traffic the candidates'
    runs never saw, paired, and the gate's decision for each."""
    from sidecar.llm.loop_clients import run_with_models
    from sidecar.shadow.runner import ShadowPass

    settings = load_settings()
    spec = required_spec(settings, prompt)
    configure_logging()
    engine = database(settings)
    try:
        report = run_with_models(ShadowPass(engine, settings, spec).execute())
    finally:
        engine.dispose()
    if json_output:
        typer.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return
    champion = f"v{report.champion_version}" if report.champion_version else "none (no active)"
    typer.echo(
        f"{report.prompt}: {report.mode} shadow pass against champion {champion}; "
        f"{report.metric_calls} metric calls, ${report.cost_usd:.4f}"
        + (f", cut by the budget ({report.stop_reason})" if report.stop_reason else "")
    )
    for outcome in report.candidates:
        delta = "n/a" if outcome.mean_delta is None else f"{outcome.mean_delta:+.3f}"
        typer.echo(
            f"v{outcome.version}  {outcome.status_before} -> {outcome.status_after}  "
            f"{outcome.pairs} pairs  mean delta {delta}  {outcome.reason}"
        )
    if not report.candidates:
        typer.echo("no candidate in shadow and none proposed")
