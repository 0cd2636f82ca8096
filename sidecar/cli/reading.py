"""Commands that read what the optimizer did, without changing anything: `candidates`, `show`,
`diff`, `lineage`, and `export` (a version in the shape an app loads). They never migrate or
write, and work from the database alone: the config file only narrows the choice of prompt and
says which evaluation key is current (without it, the key the newest replay used)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from sidecar.cli.common import JsonFlag, PromptOption, read_only_database, read_prompt
from sidecar.errors import InputError
from sidecar.promote.lifecycle import Status
from sidecar.settings import Settings, load_settings


def register(cli: typer.Typer) -> None:
    """Adds this module's commands to `cli`, in the order `--help` lists them."""
    cli.command()(candidates)
    cli.command()(show)
    cli.command()(diff)
    cli.command()(lineage)
    cli.command()(export)


def candidates(
    prompt: PromptOption = None,
    status_filter: Annotated[
        str | None, typer.Option("--status", help="Only this status (e.g. proposed).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """The prompt's versions: status, replayed mean score, live mean, what changed."""
    if status_filter is not None and status_filter not in set(Status):
        raise InputError(
            f"--status: must be one of {', '.join(Status)} (got {status_filter[:80]!r})"
        )
    settings = load_settings()
    reading = _read(settings, prompt)
    views = [
        reading.view(version)
        for version, candidate in sorted(reading.candidates.items())
        if status_filter is None or candidate.status == status_filter
    ]
    if json_output:
        typer.echo(json.dumps(views, indent=2, sort_keys=True))
        return
    for view in views:
        flagged = f"  FLAGGED ({len(view['flags'])})" if view["flags"] else ""
        typer.echo(
            f"v{view['version']:<4} {view['status']:<18} {_replay(view):<15}  {_live(view):<22}"
            f"  {view['mutation_summary'] or ''}{flagged}".rstrip()
        )


def show(
    version: Annotated[int, typer.Argument(help="The version to show.")],
    prompt: PromptOption = None,
    json_output: JsonFlag = False,
) -> None:
    """One version: components, parents, flags, evidence, replayed and live scores."""
    settings = load_settings()
    reading = _read(settings, prompt)
    name = reading.name
    _version(reading.candidates, version, name)
    view = reading.view(version)
    if json_output:
        typer.echo(json.dumps(view, indent=2, sort_keys=True))
        return
    typer.echo(f"{name} v{version} [{view['status']}]  parents {view['parents'] or 'none'}")
    typer.echo(f"change: {view['mutation_summary'] or '-'}")
    live = view["live"]
    monitored = (
        f"; live {live['mean_score']:.3f} over {live['judged_events']} judged production "
        "events (monitoring, not a replay score)"
        if live
        else ""
    )
    typer.echo(f"score: {_replay(view)}{monitored}")
    for flag in view["flags"]:
        typer.echo(f"FLAG: {flag}")
    for component, text in sorted(view["components"].items()):
        typer.echo(f"--- {component}\n{text}")


def diff(
    a: Annotated[int, typer.Argument(help="The older version.")],
    b: Annotated[int, typer.Argument(help="The newer version.")],
    prompt: PromptOption = None,
    json_output: JsonFlag = False,
) -> None:
    """What changed between two versions, per component."""
    from sidecar.optimize.lineage import component_diff

    settings = load_settings()
    reading = _read(settings, prompt)
    name, found = reading.name, reading.candidates
    older, newer = _version(found, a, name), _version(found, b, name)
    if json_output:
        report = {"prompt": name, "a": a, "b": b, "components": _component_changes(older, newer)}
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    typer.echo(component_diff(older, newer))


def lineage(prompt: PromptOption = None, json_output: JsonFlag = False) -> None:
    """Every version as a tree under its parent: status, score, what changed."""
    from sidecar.optimize.lineage import lineage_lines

    settings = load_settings()
    reading = _read(settings, prompt)
    if json_output:
        views = [reading.view(version) for version in sorted(reading.candidates)]
        typer.echo(json.dumps(views, indent=2, sort_keys=True))
        return
    typer.echo("\n".join(lineage_lines(reading.candidates, reading.means)))


EXPORT_FORMATS = ("json", "dspy")


def export(
    version: Annotated[int, typer.Argument(help="The version to export.")],
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="json: the PromptDocument every target receives; dspy: the saved-program JSON "
            "that `dspy.Module.load()` reads.",
        ),
    ] = "json",
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Write to this file (dspy: a .json file), not stdout."),
    ] = None,
    prompt: PromptOption = None,
) -> None:
    """One version as the document an app loads: the PromptDocument, or a DSPy program."""
    from sidecar.promote.documents import document_for, document_json
    from sidecar.promote.dspy_export import dspy_json
    from sidecar.store.candidates import candidates_of

    if export_format not in EXPORT_FORMATS:
        raise InputError(f"--format: must be json or dspy (got {export_format!r})")
    if export_format == "dspy" and output is not None and output.suffix != ".json":
        raise InputError(
            f"--output: dspy reads a saved program as JSON only from a file ending in .json "
            f"(got {output.name})"
        )
    settings = load_settings()
    engine = read_only_database(settings)
    try:
        name, _ = read_prompt(settings, prompt, engine)
        found = candidates_of(engine, name)
    finally:
        engine.dispose()
    document = document_for(_version(found, version, name))
    text = document_json(document) if export_format == "json" else dspy_json(document)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--output: cannot write {output}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {name} v{version} ({export_format}) to {output}")


@dataclass(frozen=True)
class Reading:
    """What the reading commands show of one prompt: its versions, their replayed means under
    one evaluation key (like for like), and their live means (production monitoring)."""

    name: str
    candidates: dict[int, Any]
    means: dict[int, tuple[float, int]]
    live: dict[int, Any]

    def view(self, version: int) -> dict[str, Any]:
        """`show --json`'s object; `live` is kept apart from `mean_score`, never mixed in."""
        from sidecar.optimize.lineage import candidate_view

        view = candidate_view(self.candidates[version], self.means.get(version))
        live = self.live.get(version)
        view["live"] = (
            None
            if live is None
            else {
                "mean_score": round(live.mean, 4),
                "judged_events": live.judged,
                "judge_version": live.judge_version,
            }
        )
        return view


def _read(settings: Settings, prompt: str | None) -> Reading:
    """The prompt's versions and scores, read without migrating or writing. The evaluation key
    and judge version are CONFIG_FILE's when it names the prompt, else the newest the database
    holds."""
    from sidecar.store.candidates import candidate_means, candidates_of
    from sidecar.store.prompt_reads import latest_evaluation_key, latest_judge_version, live_means

    engine = read_only_database(settings)
    try:
        name, spec = read_prompt(settings, prompt, engine)
        key: tuple[str, str] | None
        if spec is not None:
            key = _configured_key(settings, spec)
            judge_version: str | None = key[1]
        else:
            key = latest_evaluation_key(engine, name)
            judge_version = latest_judge_version(engine, name)
        return Reading(
            name,
            candidates_of(engine, name),
            candidate_means(engine, name, key) if key else {},
            live_means(engine, name, judge_version) if judge_version else {},
        )
    finally:
        engine.dispose()


def _configured_key(settings: Settings, spec: Any) -> tuple[str, str]:
    from sidecar.judge.judge import judge_for
    from sidecar.llm.gateway import Gateway
    from sidecar.optimize.evaluation import evaluation_key

    gateway = Gateway(settings)
    return evaluation_key(gateway, judge_for(gateway, spec), spec)


def _replay(view: dict[str, Any]) -> str:
    if view["mean_score"] is None:
        return "replay unscored"
    return f"replay {view['mean_score']:.3f}"


def _live(view: dict[str, Any]) -> str:
    live = view["live"]
    return "" if live is None else f"live {live['mean_score']:.3f} ({live['judged_events']} events)"


def _version(candidates: dict[int, Any], version: int, name: str) -> Any:
    if version not in candidates:
        raise InputError(f"VERSION: {name} has no version {version}")
    return candidates[version]


def _component_changes(older: Any, newer: Any) -> dict[str, dict[str, Any]]:
    """Per component: whether its text changed, the section the text `diff` prints for it
    (empty when unchanged), and both texts ("" where a version lacks the component)."""
    from sidecar.optimize.lineage import component_diff

    changes: dict[str, dict[str, Any]] = {}
    for component in sorted(set(older.components) | set(newer.components)):
        before = older.components.get(component, "")
        after = newer.components.get(component, "")
        section = component_diff(_only(older, component), _only(newer, component))
        changes[component] = {
            "changed": before != after,
            "diff": section if before != after else "",
            "before": before,
            "after": after,
        }
    return changes


def _only(candidate: Any, component: str) -> Any:
    """A copy of the candidate with one component, so `component_diff` gives just its section."""
    text = candidate.components.get(component, "")
    return candidate.model_copy(update={"components": {component: text}})
