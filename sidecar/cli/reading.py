"""Commands that read what the optimizer did, without changing anything: `candidates`, `show`,
`diff`, `lineage`, and `export` (a version in the shape an app loads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sidecar.cli.common import JsonFlag, PromptOption, database, required_spec
from sidecar.errors import InputError
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


def diff(
    a: Annotated[int, typer.Argument(help="The older version.")],
    b: Annotated[int, typer.Argument(help="The newer version.")],
    prompt: PromptOption = None,
    json_output: JsonFlag = False,
) -> None:
    """What changed between two versions, per component."""
    from sidecar.optimize.lineage import component_diff

    settings = load_settings()
    name, found, _ = _views(settings, prompt)
    older, newer = _version(found, a, name), _version(found, b, name)
    if json_output:
        report = {"prompt": name, "a": a, "b": b, "components": _component_changes(older, newer)}
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    typer.echo(component_diff(older, newer))


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
    name = required_spec(settings, prompt).name
    engine = database(settings)
    try:
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


def _views(settings: Settings, prompt: str | None) -> tuple[str, dict[int, Any], dict[int, Any]]:
    """(prompt name, candidates by version, their mean scores) for the reading commands."""
    from sidecar.judge.judge import judge_for
    from sidecar.llm.gateway import Gateway
    from sidecar.optimize.evaluation import evaluation_key
    from sidecar.store.candidates import candidate_means, candidates_of

    spec = required_spec(settings, prompt)
    gateway = Gateway(settings)
    key = evaluation_key(gateway, judge_for(gateway, spec), spec)
    engine = database(settings)
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
