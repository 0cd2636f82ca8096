"""The `gepa-sidecar` command. Every command exits non-zero with one line on bad input; `--json`
gives machine output. Commands other than `run`, `demo` and `broker` are clients of the same
database a running sidecar uses."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from sidecar.errors import ConfigError, InputError, SidecarError
from sidecar.settings import PromptSpec, Settings, load_prompts_config, load_settings

cli = typer.Typer(
    name="gepa-sidecar",
    help="Improve a production chatbot's prompt from its own live traffic, safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "uvicorn", "alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _stop_on_signals(stop: Any) -> None:
    """SIGTERM and SIGINT only ask for a stop; the loops finish their batch and close."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop())


@cli.command()
def run() -> None:
    """Run everything: consumer, judge workers, the optimize schedule, HTTP API."""
    settings = load_settings()
    prompts = load_prompts_config(settings.config_file)
    from sidecar.runtime.app import App

    _configure_logging()
    app = App(settings, prompts)
    _stop_on_signals(app.stop)
    app.run()


@cli.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to listen on.")] = 9092,
    partitions: Annotated[int, typer.Option(help="Partitions of the traffic topic.")] = 1,
) -> None:
    """Start the embedded Kafka-compatible broker (memory only) with the sidecar's topics."""
    from sidecar.runtime.broker import EmbeddedBroker
    from sidecar.runtime.kafka import ensure_topics

    settings = load_settings()
    _configure_logging()
    stopped = threading.Event()
    _stop_on_signals(stopped.set)
    with EmbeddedBroker(port=port) as embedded:
        servers = embedded.bootstrap_servers
        ensure_topics(servers, [settings.traffic_topic, settings.dlq_topic], partitions)
        ensure_topics(servers, [settings.prompts_topic], compacted=[settings.prompts_topic])
        typer.echo(f"embedded broker listening: SIDECAR_KAFKA_BOOTSTRAP_SERVERS={servers}")
        stopped.wait()


@cli.command()
def demo(
    events: Annotated[int, typer.Option(help="How many example events to stream.")] = 40,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its database.")] = Path(
        "demo-data"
    ),
) -> None:
    """Start an embedded broker and the sidecar, stream example traffic, show what was counted."""
    from sidecar.runtime.demo import run_demo

    _configure_logging()
    run_demo(events=events, data_dir=data_dir, echo=typer.echo)


@cli.command()
def status(json_output: JsonFlag = False) -> None:
    """Counts of consumed events, optimization spend, and each prompt's active version."""
    from sidecar.store.database import create_database_engine, migrate
    from sidecar.store.repository import status_summary

    settings = load_settings()
    _require_database(settings)
    engine = create_database_engine(settings.database_url)
    migrate(engine)
    summary = status_summary(engine)
    engine.dispose()
    if json_output:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    typer.echo(_format_status(summary))


@cli.command("judge-eval")
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
    """How well the judge agrees with human labels: accuracy, Cohen's kappa, confusion matrix."""
    import asyncio

    from sidecar.judge.agreement import agreement, read_labels
    from sidecar.judge.judge import judge_for, score_all
    from sidecar.llm.gateway import Gateway

    settings = load_settings()
    spec = _prompt_spec(settings, prompt)
    name = spec.name if spec else None
    examples = read_labels(labels)
    judge = judge_for(Gateway(settings), spec)
    verdicts = asyncio.run(score_all(judge, [(e.inputs, e.output, e.trace) for e in examples]))
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
    if min_kappa is not None and (result.kappa is None or result.kappa < min_kappa):
        typer.echo(f"error: kappa {result.kappa} is below --min-kappa {min_kappa}", err=True)
        raise typer.Exit(1)


def _prompt_spec(settings: Settings, prompt: str | None) -> PromptSpec | None:
    """The named prompt of CONFIG_FILE, or its only prompt; None when it lists none."""
    specs = {spec.name: spec for spec in load_prompts_config(settings.config_file).prompts}
    if prompt is not None:
        if prompt not in specs:
            known = ", ".join(sorted(specs)) or "none"
            raise InputError(f"--prompt: {prompt!r} is not in SIDECAR_CONFIG_FILE (known: {known})")
        return specs[prompt]
    if len(specs) > 1:
        raise InputError(f"--prompt: several prompts are managed ({', '.join(sorted(specs))})")
    return next(iter(specs.values()), None)


def _required_spec(settings: Settings, prompt: str | None) -> PromptSpec:
    spec = _prompt_spec(settings, prompt)
    if spec is None:
        raise InputError("SIDECAR_CONFIG_FILE: names no prompt to work on")
    return spec


def _format_agreement(report: dict[str, Any]) -> str:
    kappa = "undefined" if report["kappa"] is None else f"{report['kappa']:.3f}"
    categories = report["categories"]
    lines = [
        f"judge      {report['judge_version']}  prompt={report['prompt']}",
        f"examples   n={report['n']}  judge_errors={report['judge_errors']}",
        f"accuracy   {report['accuracy']:.3f}",
        f"kappa      {kappa}",
        f"mae        {report['mean_abs_error']:.3f}",
        "confusion  rows: human label, columns: judge",
        "           " + "".join(f"{category:>8g}" for category in categories),
    ]
    for category, row in zip(categories, report["confusion"], strict=True):
        lines.append(f"   {category:>8g}" + "".join(f"{count:>8d}" for count in row))
    return "\n".join(lines)


PromptOption = Annotated[
    str | None, typer.Option("--prompt", help="Which prompt (needed when several are managed).")
]


def _database(settings: Settings) -> Any:
    """The migrated engine of an existing database (client commands never create one)."""
    from sidecar.store.database import create_database_engine, migrate

    _require_database(settings)
    engine = create_database_engine(settings.database_url)
    migrate(engine)
    return engine


@cli.command()
def optimize(prompt: PromptOption = None, json_output: JsonFlag = False) -> None:
    """One GEPA run now over the prompt's recent judged traffic, within the run budget."""
    import asyncio

    from sidecar.optimize.engine import OptimizationRun, RunReport

    settings = load_settings()
    spec = _required_spec(settings, prompt)
    _configure_logging()
    engine = _database(settings)

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
            report = _with_progress_bar(run, settings.run_max_metric_calls)
        else:  # logs (a pod, CI): one line per iteration
            run.progress = line
            report = asyncio.run(run.execute())
    finally:
        engine.dispose()
    if json_output:
        typer.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return
    typer.echo(
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


def _with_progress_bar(run: Any, budget_calls: int) -> Any:
    """Run with a live bar on stderr: metric calls against the budget, spend, best, frontier."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("optimizing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("metric calls  ${task.fields[cost]:.4f}  best {task.fields[best]}"),
        TextColumn("frontier {task.fields[frontier]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
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
        return asyncio.run(run.execute())


def _views(settings: Settings, prompt: str | None) -> tuple[str, dict[int, Any], dict[int, Any]]:
    """(prompt name, candidates by version, their mean scores) for the reading commands."""
    from sidecar.judge.judge import judge_for
    from sidecar.llm.gateway import Gateway
    from sidecar.optimize.evaluation import evaluation_key
    from sidecar.store.candidates import candidate_means, candidates_of

    spec = _required_spec(settings, prompt)
    gateway = Gateway(settings)
    key = evaluation_key(gateway, judge_for(gateway, spec), spec)
    engine = _database(settings)
    try:
        candidates = candidates_of(engine, spec.name)
        means = candidate_means(engine, spec.name, key)
    finally:
        engine.dispose()
    return spec.name, candidates, means


def _version(candidates: dict[int, Any], version: int, name: str) -> Any:
    if version not in candidates:
        raise InputError(f"VERSION: {name} has no version {version}")
    return candidates[version]


@cli.command()
def candidates(
    prompt: PromptOption = None,
    status_filter: Annotated[
        str | None, typer.Option("--status", help="Only this status (e.g. proposed).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """The prompt's versions: status, mean score, what changed."""
    from sidecar.optimize.lineage import candidate_view

    settings = load_settings()
    _, found, means = _views(settings, prompt)
    views = [
        candidate_view(candidate, means.get(version))
        for version, candidate in sorted(found.items())
        if status_filter is None or candidate.status == status_filter
    ]
    if json_output:
        typer.echo(json.dumps(views, indent=2, sort_keys=True))
        return
    for view in views:
        score = "unscored" if view["mean_score"] is None else f"{view['mean_score']:.3f}"
        flagged = f"  FLAGGED ({len(view['flags'])})" if view["flags"] else ""
        typer.echo(
            f"v{view['version']:<4} {view['status']:<18} {score:<9} "
            f"{view['mutation_summary'] or ''}{flagged}"
        )


@cli.command()
def show(
    version: Annotated[int, typer.Argument(help="The version to show.")],
    prompt: PromptOption = None,
    json_output: JsonFlag = False,
) -> None:
    """One version: components, parents, flags, evidence."""
    from sidecar.optimize.lineage import candidate_view

    settings = load_settings()
    name, found, means = _views(settings, prompt)
    view = candidate_view(_version(found, version, name), means.get(version))
    if json_output:
        typer.echo(json.dumps(view, indent=2, sort_keys=True))
        return
    typer.echo(f"{name} v{version} [{view['status']}]  parents {view['parents'] or 'none'}")
    typer.echo(f"change: {view['mutation_summary'] or '-'}")
    for flag in view["flags"]:
        typer.echo(f"FLAG: {flag}")
    for component, text in sorted(view["components"].items()):
        typer.echo(f"--- {component}\n{text}")


@cli.command()
def diff(
    a: Annotated[int, typer.Argument(help="The older version.")],
    b: Annotated[int, typer.Argument(help="The newer version.")],
    prompt: PromptOption = None,
) -> None:
    """What changed between two versions, per component."""
    from sidecar.optimize.lineage import component_diff

    settings = load_settings()
    name, found, _ = _views(settings, prompt)
    typer.echo(component_diff(_version(found, a, name), _version(found, b, name)))


@cli.command()
def lineage(prompt: PromptOption = None, json_output: JsonFlag = False) -> None:
    """Every version as a tree under its parent: status, score, what changed."""
    from sidecar.optimize.lineage import candidate_view, lineage_lines

    settings = load_settings()
    _, found, means = _views(settings, prompt)
    if json_output:
        views = [candidate_view(c, means.get(v)) for v, c in sorted(found.items())]
        typer.echo(json.dumps(views, indent=2, sort_keys=True))
        return
    typer.echo("\n".join(lineage_lines(found, means)))


def _require_database(settings: Settings) -> None:
    """A client command must not create an empty SQLite file because of a typo."""
    url = settings.database_url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise InputError(
                f"SIDECAR_DATABASE_URL: no database at {path} (has `gepa-sidecar run` started?)"
            )


def _format_status(summary: dict[str, Any]) -> str:
    events = summary["events"]
    optimization = summary["optimization"]
    lines = [
        "events     " + "  ".join(f"{name}={events[name]}" for name in sorted(events)),
        f"optimize   runs={optimization['runs']}  metric_calls={optimization['metric_calls']}"
        f"  cost_usd={optimization['cost_usd']:.4f}",
    ]
    for name, prompt in summary["prompts"].items():
        lines.append(f"prompt     {name}  active_version={prompt['active_version']}")
    return "\n".join(lines)


def main() -> None:
    """Entry point: a SidecarError becomes one line on stderr and exit code 2 (bad input or
    config) or 1 (a failure at run time)."""
    try:
        cli()
    except (ConfigError, InputError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except SidecarError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
