"""What `gepa-sidecar demo` starts before the script runs: the models, the sidecar's settings,
and the example chatbot beside it.

Models, in the order the demo looks for them: the three role settings when they name a real
provider (the real thing); `--models local`, the small local model for every role (which
cannot improve a prompt, and the demo says so); by default, the simulated models: our
deterministic OpenAI-compatible server playing the example's customer-care world, labelled as
such wherever a score appears, so the whole loop's mechanics run for real in minutes."""

from __future__ import annotations

import importlib
import os
import secrets
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError
from sidecar.runtime.http import HttpServer
from sidecar.settings import Settings, load_settings

EXAMPLE_DIR = Path("examples/customer_care")
LOCAL_MODEL = "openai/local"
ROLES = ("judge", "task", "reflection")


@dataclass(frozen=True)
class Models:
    """Where each role and the chatbot get their answers, and how every screen names them."""

    label: str
    settings: dict[str, Any]
    chatbot_model: str
    chatbot_api_base: str | None
    chatbot_api_key: str | None
    can_improve: bool


def example_module(name: str) -> Any:
    """A module of the example chatbot (the demo runs from the repository root)."""
    if not (EXAMPLE_DIR / f"{name}.py").is_file():
        raise ConfigError(f"demo needs {EXAMPLE_DIR / name}.py: run it from the repository root")
    return importlib.import_module(f"examples.customer_care.{name}")


def start_models(base: Settings, mode: str, stack: ExitStack) -> Models:
    chosen = {role: base.model_of(role) for role in ROLES}
    configured = [role for role, (model, _, _) in chosen.items() if model != LOCAL_MODEL]
    if configured and mode == "simulated":
        task_model, task_base, task_key = chosen["task"]
        named = ", ".join(f"{role}={model}" for role, (model, _, _) in chosen.items())
        return Models(
            label=f"real models ({named})",
            settings={},
            chatbot_model=task_model,
            chatbot_api_base=task_base,
            chatbot_api_key=task_key.get_secret_value() if task_key else None,
            can_improve=True,
        )
    if mode == "local":
        from sidecar.runtime.local_model import LocalModelServer

        server = stack.enter_context(LocalModelServer(base.local_model_path))
        return Models(
            label=f"local model {server.model_path.name} (135M: cannot improve a prompt)",
            settings={f"{role}_api_base": server.api_base for role in ROLES},
            chatbot_model=LOCAL_MODEL,
            chatbot_api_base=server.api_base,
            chatbot_api_key=None,
            can_improve=False,
        )
    from sidecar.simulated import LlmServer

    world = example_module("world").CustomerCareWorld()
    server = stack.enter_context(LlmServer(world=world))
    return Models(
        label="simulated models",
        settings={f"{role}_api_base": server.api_base for role in ROLES},
        chatbot_model=LOCAL_MODEL,
        chatbot_api_base=server.api_base,
        chatbot_api_key=None,
        can_improve=True,
    )


def fresh_data_dir(data_dir: Path) -> None:
    """Each demo starts from nothing: its database and published prompts are its own."""
    for name in ("sidecar.db", "sidecar.db-wal", "sidecar.db-shm"):
        (data_dir / name).unlink(missing_ok=True)
    shutil.rmtree(data_dir / "prompts", ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)


def demo_settings(servers: str, data_dir: Path, models: Models, http_port: int) -> Settings:
    """The sidecar's settings for the demo: the example's config, a fresh database, a token for
    approving over HTTP, schedules the script drives itself (it runs each step when it shows
    it), and the traffic topic read from its start (the chatbot may talk before the group has
    joined)."""
    return load_settings(
        **models.settings,
        kafka_bootstrap_servers=servers,
        database_url=os.environ.get("SIDECAR_DATABASE_URL", f"sqlite:///{data_dir / 'sidecar.db'}"),
        config_file=os.environ.get("SIDECAR_CONFIG_FILE", str(EXAMPLE_DIR / "config.yaml")),
        publish_dir=os.environ.get("SIDECAR_PUBLISH_DIR", str(data_dir / "prompts")),
        admin_token=os.environ.get("SIDECAR_ADMIN_TOKEN", secrets.token_urlsafe(16)),
        http_port=http_port,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
        kafka_auto_offset_reset="earliest",
        judge_poll_interval_s=0.2,
        publish_poll_interval_s=0.2,
        optimize_schedule="86400",
        shadow_schedule="86400",
        shadow_min_pairs=20,
        run_max_metric_calls=400,
        optimize_patience=8,
    )


def start_chatbot(
    settings: Settings, models: Models, port: int, stack: ExitStack
) -> tuple[Any, HttpServer]:
    """The example chatbot on its own port, following the published file and emitting its
    traffic to the sidecar's topic, exactly as it would run beside a real sidecar."""
    chatbot = example_module("chatbot")
    from sidecar.client import TrafficEmitter

    source = f"file://{(settings.publish_dir / 'customer-care.json').resolve()}"
    prompt = stack.enter_context(chatbot.hot_prompt(source))
    emitter = TrafficEmitter(
        settings.kafka_bootstrap_servers or "",
        settings.traffic_topic,
        prompt_name=chatbot.NAME,
    )
    stack.callback(emitter.close, 5.0)
    app = chatbot.create_chatbot(
        prompt, emitter, models.chatbot_model, models.chatbot_api_base, models.chatbot_api_key
    )
    server = HttpServer(app, "127.0.0.1", port, setting="--chatbot-port").start()
    stack.callback(server.stop)
    return prompt, server
