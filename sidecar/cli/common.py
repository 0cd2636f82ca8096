"""What every command shares: the `--json` and `--prompt` options, choosing the prompt, opening
the database a running sidecar uses (migrated for the commands that write, read-only for those
that read), logging, and stopping on a signal. Imports stay light so
that `gepa-sidecar --help` starts quickly; each command imports its heavy parts itself."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Annotated, Any

import typer

from sidecar.errors import InputError
from sidecar.logs import log_to_stderr
from sidecar.settings import PromptSpec, Settings, load_prompts_config, load_settings

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

PromptOption = Annotated[
    str | None, typer.Option("--prompt", help="Which prompt (needed when several are managed).")
]


def configure_logging(quiet: bool = False) -> None:
    """The log at LOG_LEVEL in LOG_FORMAT, on stderr; `quiet` (the demo, whose screen is its
    script) shows warnings only, as text."""
    if not quiet:
        settings = load_settings()
        log_to_stderr(settings.log_level, settings.log_format)
        return
    log_to_stderr("WARNING", "text")
    # litellm's async logging worker complains when a loop it once used closes (the demo runs
    # optimize and shadow passes on loops of their own); nothing is lost with it
    for chatty in ("LiteLLM", "asyncio"):
        logging.getLogger(chatty).setLevel(logging.CRITICAL)


def stop_on_signals(stop: Callable[[], Any]) -> None:
    """SIGTERM and SIGINT only ask for a stop; the loops finish their batch and close."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop())


def prompt_spec(settings: Settings, prompt: str | None) -> PromptSpec | None:
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


def required_spec(settings: Settings, prompt: str | None) -> PromptSpec:
    """As `prompt_spec`, for the commands that cannot work without a prompt."""
    spec = prompt_spec(settings, prompt)
    if spec is None:
        raise InputError("SIDECAR_CONFIG_FILE: names no prompt to work on")
    return spec


def read_prompt(
    settings: Settings, prompt: str | None, engine: Any
) -> tuple[str, PromptSpec | None]:
    """The prompt a reading command works on, from the database alone: `--prompt`, else the
    only prompt the database knows. CONFIG_FILE, when set, narrows the choice to its prompts
    (and may name one not seeded yet) and gives the chosen one's spec."""
    from sidecar.store.prompt_reads import prompt_names

    specs = {spec.name: spec for spec in load_prompts_config(settings.config_file).prompts}
    known = prompt_names(engine)
    if prompt is not None:
        if prompt not in known and prompt not in specs:
            names = ", ".join(sorted(set(known) | set(specs))) or "none"
            raise InputError(f"--prompt: no prompt named {prompt!r} (known: {names})")
        return prompt, specs.get(prompt)
    choices = sorted(specs) or known
    if len(choices) > 1:
        raise InputError(f"--prompt: several prompts are managed ({', '.join(choices)})")
    if not choices:
        raise InputError(
            "SIDECAR_DATABASE_URL: the database holds no prompt yet (`gepa-sidecar run` seeds "
            "those of SIDECAR_CONFIG_FILE)"
        )
    return choices[0], specs.get(choices[0])


def read_only_database(settings: Settings) -> Any:
    """An engine on the existing database, at this gepa-sidecar's schema, that never migrates
    and refuses every write: what the reading commands use."""
    from sidecar.store.database import open_read_only

    require_database(settings)
    return open_read_only(settings.database_url)


def database(settings: Settings) -> Any:
    """The migrated engine of an existing database (client commands never create one)."""
    from sidecar.store.database import create_database_engine, migrate

    require_database(settings)
    engine = create_database_engine(settings.database_url)
    migrate(engine)
    return engine


def require_database(settings: Settings) -> None:
    """A client command must not create an empty SQLite file because of a typo."""
    from sidecar.store.database import missing_sqlite_file

    path = missing_sqlite_file(settings.database_url)
    if path is not None:
        raise InputError(
            f"SIDECAR_DATABASE_URL: no database at {path} (has `gepa-sidecar run` started?)"
        )
