"""What `gepa-sidecar doctor` checks, one finding per line: the settings, the config file, the
database (reached and at the schema this release needs, without migrating it), Kafka (reached,
the topics, the consumer group) and one tiny call per model role. Every check runs even when an
earlier one failed, except those that need what failed; nothing here writes anywhere."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

from sidecar.client.template import placeholders
from sidecar.errors import SidecarError
from sidecar.settings import PromptsConfig, Settings, load_prompts_config, load_settings

Status = Literal["ok", "warn", "fail"]
T = TypeVar("T")

MODEL_CHECK_TIMEOUT_S = 30.0
KAFKA_CHECK_TIMEOUT_MS = 8_000
RECENT_EVENTS = 200
"""Events read per prompt to learn which input keys its traffic carries."""


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Doctor:
    """Runs the checks in order; `findings` holds one per line of output."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.findings: list[Finding] = []

    @property
    def failed(self) -> bool:
        return any(finding.status == "fail" for finding in self.findings)

    def run(self, models: bool = True) -> list[Finding]:
        settings = self._settings()
        if settings is None:
            return self.findings
        prompts = self._config(settings)
        engine = self._database(settings)
        if engine is not None:
            try:
                if prompts is not None:
                    self._templates(engine, prompts)
            finally:
                engine.dispose()
        self._kafka(settings)
        if models:
            self._models(settings)
        return self.findings

    def _add(self, check: str, status: Status, detail: str) -> None:
        self.findings.append(Finding(check, status, detail))

    def _guard(self, check: str, step: Callable[[], T]) -> T | None:
        """A check that raises is a failed line, never a traceback that hides the others."""
        try:
            return step()
        except SidecarError as exc:
            self._add(check, "fail", str(exc))
        except Exception as exc:
            self._add(check, "fail", f"{type(exc).__name__}: {one_line(exc)}")
        return None

    def _settings(self) -> Settings | None:
        from sidecar.settings import misspelled_variables

        settings = self._guard("settings", load_settings)
        for warning in misspelled_variables(self.environ):
            self._add("settings", "warn", warning)
        if settings is None:
            return None
        self._add("settings", "ok", "every SIDECAR_* setting is valid")
        notice = settings.role_fallback_notice()
        if notice:
            self._add("settings", "ok", notice)
        return settings

    def _config(self, settings: Settings) -> PromptsConfig | None:
        prompts = self._guard("config", lambda: load_prompts_config(settings.config_file))
        if prompts is None:
            return None
        if not prompts.prompts:
            self._add(
                "config",
                "warn",
                "SIDECAR_CONFIG_FILE names no prompt: `run` would have nothing to judge or improve",
            )
            return prompts
        names = ", ".join(prompt.name for prompt in prompts.prompts)
        count = len(prompts.prompts)
        self._add("config", "ok", f"{settings.config_file}: {count} prompt(s): {names}")
        return prompts

    def _database(self, settings: Settings) -> Any:
        from sqlalchemy import make_url

        from sidecar.store.database import missing_sqlite_file, open_read_only, schema_state

        shown = make_url(settings.database_url).render_as_string(hide_password=True)
        if missing_sqlite_file(settings.database_url) is not None:
            self._add("database", "fail", f"{shown}: no database file yet (`run` creates it)")
            return None
        engine = self._guard("database", lambda: open_read_only(settings.database_url))
        if engine is not None:
            revision = schema_state(engine).current
            self._add("database", "ok", f"{shown}: reachable, schema at {revision} (current)")
        return engine

    def _templates(self, engine: Any, prompts: PromptsConfig) -> None:
        """Each task template's placeholders that are not components must be input keys the
        prompt's traffic carries, or the model sees the placeholder itself."""
        from sidecar.store.repository import recent_input_keys

        for spec in prompts.prompts:
            check = f"prompt {spec.name}"
            if spec.task is None:
                self._add(check, "ok", "no task template: components as the system message")
                continue
            inputs = placeholders(spec.task) - set(spec.seed)
            read = functools.partial(recent_input_keys, engine, spec.name, RECENT_EVENTS)
            keys = self._guard(check, read)
            if keys is None:
                continue
            named = braced(inputs) or "no input"
            if not keys:
                self._add(check, "ok", f"template names {named}; no event yet to check it against")
                continue
            unknown = inputs - keys
            if unknown:
                self._add(
                    check,
                    "fail",
                    f"task.messages names {braced(unknown)}, which no recent event's inputs carry "
                    f"(they carry: {', '.join(sorted(keys))})",
                )
            else:
                self._add(check, "ok", f"template names {named}, all in recent events' inputs")

    def _kafka(self, settings: Settings) -> None:
        servers = settings.kafka_bootstrap_servers
        if not servers:
            self._add(
                "kafka",
                "fail",
                "SIDECAR_KAFKA_BOOTSTRAP_SERVERS: not set (`run` needs it; `demo` starts an "
                "embedded broker)",
            )
            return
        admin = self._guard("kafka", lambda: _admin(settings))
        if admin is None:
            return
        try:
            self._topics(settings, admin)
            self._group(settings, admin)
        finally:
            admin.close()

    def _topics(self, settings: Settings, admin: Any) -> None:
        wanted = [settings.traffic_topic, settings.dlq_topic]
        if "kafka" in settings.publish_targets:
            wanted.append(settings.prompts_topic)
        described = self._guard("kafka", lambda: admin.describe_topics(wanted))
        if described is None:
            return
        found = {topic["name"]: topic for topic in described if not topic.get("error_code")}
        parts = [
            f"{name} ({len(found[name]['partitions'])} partition(s))"
            if name in found
            else f"{name} missing"
            for name in wanted
        ]
        missing = [name for name in wanted if name not in found]
        servers = settings.kafka_bootstrap_servers
        if missing:
            self._add(
                "kafka",
                "warn",
                f"{servers}: reachable; topics: {', '.join(parts)} (`run` creates missing topics "
                "where the cluster allows it)",
            )
        else:
            self._add("kafka", "ok", f"{servers}: reachable; topics: {', '.join(parts)}")

    def _group(self, settings: Settings, admin: Any) -> None:
        group = settings.consumer_group
        try:
            state, members = describe_group(admin, group)
        except Exception as exc:
            self._add(
                "group", "warn", f"{group}: state unknown ({type(exc).__name__}: {one_line(exc)})"
            )
            return
        status: Status = "ok" if state in ("Stable", "Empty", "Dead") else "warn"
        self._add("group", status, f"{group}: {state}, {members} member(s)")

    def _models(self, settings: Settings) -> None:
        from sidecar.llm.gateway import ROLES, Gateway, load_litellm
        from sidecar.llm.loop_clients import run_with_models

        quick = settings.model_copy(
            update={
                "llm_max_retries": 0,
                "llm_timeout_s": min(settings.llm_timeout_s, MODEL_CHECK_TIMEOUT_S),
            }
        )
        gateway = Gateway(quick)
        load_litellm()  # imported before the clock starts: seconds that are not the model's
        answered: dict[tuple[str, str | None, str | None], tuple[str, Status]] = {}
        for role in ROLES:
            spec = gateway.roles[role]
            where = f"{spec.model}" + (f" at {spec.api_base}" if spec.api_base else "")
            same = (spec.model, spec.api_base, spec.api_key)
            if same in answered:
                checked, status = answered[same]
                self._add(f"model {role}", status, f"{where}: the same model as {checked}")
                continue
            started = time.perf_counter()
            try:
                run_with_models(gateway.complete(role, PING, max_tokens=5))
            except SidecarError as exc:
                finding = Finding(f"model {role}", "fail", f"{where}: {exc}")
            else:
                took = time.perf_counter() - started
                finding = Finding(f"model {role}", "ok", f"{where}: answered in {took:.1f}s")
            answered[same] = (role, finding.status)
            self.findings.append(finding)


PING = [{"role": "user", "content": "Reply with the word OK."}]


def braced(names: set[str]) -> str:
    return ", ".join(f"{{{name}}}" for name in sorted(names))


def _admin(settings: Settings) -> Any:
    from kafka import KafkaAdminClient

    from sidecar.client.kafka_clients import build_client
    from sidecar.client.security import kafka_security_options

    return build_client(
        KafkaAdminClient,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=KAFKA_CHECK_TIMEOUT_MS,
        bootstrap_timeout_ms=KAFKA_CHECK_TIMEOUT_MS,
        **kafka_security_options(settings),
    )


def describe_group(admin: Any, group: str) -> tuple[str, int]:
    """The group's state and member count. KafkaAdminClient.describe_groups always asks for the
    authorized operations too, and cannot parse the embedded broker's answer to that; so the
    request is sent without them, through the admin client's own connection (kafka-python's,
    pinned in the lock file)."""
    from kafka.errors import for_code
    from kafka.protocol.admin import DescribeGroupsRequest

    async def describe() -> Any:
        coordinators = await admin._find_coordinator_ids([group])
        request = DescribeGroupsRequest(groups=[group], include_authorized_operations=False)
        return await admin._manager.send(request, node_id=coordinators[group])

    [found] = [answer for answer in admin._manager.run(describe).groups if answer.group_id == group]
    if found.error_code:
        raise for_code(found.error_code)()
    return str(found.group_state), len(found.members)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
