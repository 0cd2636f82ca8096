"""The optimizer's live progress bar on a terminal, for `optimize` and the demo."""

from __future__ import annotations

from typing import Any


def run_with_progress_bar(run: Any, budget_calls: int, stderr: bool = True) -> Any:
    """Run with a live bar (stderr, or stdout for the demo's screen): metric calls against the
    budget, spend, best version, frontier."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from sidecar.llm.loop_clients import run_with_models

    columns = (
        TextColumn("optimizing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("metric calls  ${task.fields[cost]:.4f}  best {task.fields[best]}"),
        TextColumn("frontier {task.fields[frontier]}"),
    )
    with Progress(*columns, console=Console(stderr=stderr), transient=False) as bar:
        task = bar.add_task("run", total=budget_calls, cost=0.0, best="-", frontier=0)

        def update(report: Any) -> None:
            bar.update(
                task,
                completed=report.metric_calls,
                cost=report.cost_usd,
                best=f"v{report.best_version} {report.best_score:.3f}",
                frontier=len(report.frontier),
            )

        run.progress = update
        return run_with_models(run.execute())
