"""Typed settings from `SIDECAR_*` environment variables (and `.env`), checked once at start."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sidecar.client.template import placeholders
from sidecar.errors import ConfigError

ENV_PREFIX = "SIDECAR_"

PublishTarget = Literal["file", "kafka", "http"]


class Settings(BaseSettings):
    """Everything the sidecar can be told; frozen so one object is shared by every stage."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    kafka_bootstrap_servers: str | None = None
    traffic_topic: str = "gepa.traffic"
    dlq_topic: str = "gepa.traffic.dlq"
    prompts_topic: str = "gepa.prompts"
    consumer_group: str = "gepa-sidecar"
    kafka_session_timeout_ms: Annotated[int, Field(ge=1000, le=3_600_000)] = 10_000
    kafka_heartbeat_interval_ms: Annotated[int, Field(ge=100, le=600_000)] = 3_000
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "latest"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    ingest_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    ingest_queue_batches: Annotated[int, Field(ge=1, le=64)] = 4

    database_url: str = "sqlite:///./sidecar.db"

    judge_model: str = "openai/local"
    task_model: str = "openai/local"
    reflection_model: str = "openai/local"
    judge_api_base: str | None = None
    task_api_base: str | None = None
    reflection_api_base: str | None = None
    judge_api_key: SecretStr | None = None
    task_api_key: SecretStr | None = None
    reflection_api_key: SecretStr | None = None
    judge_concurrency: Annotated[int, Field(ge=1, le=1024)] = 8
    task_concurrency: Annotated[int, Field(ge=1, le=1024)] = 8
    reflection_concurrency: Annotated[int, Field(ge=1, le=1024)] = 2
    llm_timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 60.0
    llm_max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    llm_backoff_base_s: Annotated[float, Field(ge=0.0, le=60.0)] = 0.5
    llm_backoff_cap_s: Annotated[float, Field(ge=0.0, le=600.0)] = 8.0
    judge_response_format: Literal["auto", "json_schema", "none"] = "auto"
    judge_max_tokens: Annotated[int, Field(ge=16, le=8192)] = 400
    judge_retry_after_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = 60.0
    judge_poll_interval_s: Annotated[float, Field(gt=0.0, le=60.0)] = 1.0
    judge_budget_usd_per_hour: Annotated[float | None, Field(gt=0.0)] = None
    judge_max_per_minute: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    judge_max_event_age_hours: Annotated[float, Field(gt=0.0)] = 168.0
    local_model_path: Path | None = None

    optimize_schedule: str = "3600"
    run_budget_usd: Annotated[float, Field(ge=0.0)] = 1.0
    run_max_metric_calls: Annotated[int, Field(ge=1)] = 500
    run_max_seconds: Annotated[float, Field(gt=0.0)] = 1800.0
    optimize_patience: Annotated[int, Field(ge=1)] = 20
    optimize_minibatch_size: Annotated[int, Field(ge=1, le=64)] = 3
    optimize_epsilon: Annotated[float, Field(ge=0.0, le=1.0)] = 0.02
    optimize_margin: Annotated[float, Field(ge=0.0)] = 0.0
    optimize_pareto_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    optimize_window_events: Annotated[int, Field(ge=2, le=100_000)] = 200
    optimize_window_hours: Annotated[float, Field(gt=0.0)] = 168.0
    optimize_max_component_chars: Annotated[int, Field(ge=100, le=100_000)] = 4000
    optimize_merge_every: Annotated[int, Field(ge=0)] = 5
    optimize_propose_margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.02
    optimize_warm_pool: Annotated[int, Field(ge=0, le=100)] = 4

    shadow_schedule: str = "600"
    shadow_candidates: Annotated[int, Field(ge=1, le=20)] = 3
    shadow_mode: Literal["pointwise", "pairwise"] = "pointwise"
    shadow_min_pairs: Annotated[int, Field(ge=2, le=100_000)] = 30
    shadow_max_pairs: Annotated[int, Field(ge=2, le=100_000)] = 300
    shadow_alpha: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    shadow_min_effect: Annotated[float, Field(ge=0.0, le=1.0)] = 0.02
    shadow_segment_delta: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    shadow_segment_min_pairs: Annotated[int, Field(ge=1)] = 10
    shadow_deadline_hours: Annotated[float, Field(gt=0.0)] = 72.0
    shadow_max_metric_calls: Annotated[int, Field(ge=1)] = 200
    shadow_budget_usd: Annotated[float, Field(ge=0.0)] = 0.5

    publish_dir: Path = Path("./prompts")
    publish_targets: Annotated[tuple[PublishTarget, ...], NoDecode] = ("file", "kafka", "http")
    publish_poll_interval_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 1.0
    admin_token: SecretStr | None = None
    http_host: str = "0.0.0.0"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8791
    config_file: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    shutdown_grace_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 20.0

    @field_validator("kafka_heartbeat_interval_ms")
    @classmethod
    def _heartbeat_below_session(cls, value: int, info: ValidationInfo) -> int:
        session = info.data.get("kafka_session_timeout_ms")
        if session is not None and value >= session:
            raise ValueError("must be lower than SIDECAR_KAFKA_SESSION_TIMEOUT_MS")
        return value

    @field_validator("publish_targets", mode="before")
    @classmethod
    def _targets_from_list(cls, value: object) -> object:
        """`file,kafka` in the environment; an empty value turns publishing off."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("publish_targets")
    @classmethod
    def _targets_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("names a target twice")
        return value

    @field_validator("optimize_schedule", "shadow_schedule")
    @classmethod
    def _schedule_is_seconds_or_cron(cls, value: str) -> str:
        text = value.strip()
        if text.isdigit():
            if int(text) <= 0:
                raise ValueError("seconds must be positive")
            return text
        if len(text.split()) != 5:
            raise ValueError("must be a number of seconds or a 5-field cron expression")
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(text, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a valid cron expression: {exc}") from None
        return text

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("config_file", "local_model_path", "kafka_ssl_cafile")
    @classmethod
    def _config_file_exists(cls, value: Path | None) -> Path | None:
        if value is None or value.is_file():
            return value
        problem = "is a directory, not a file" if value.is_dir() else "no such file"
        raise PydanticCustomError("path", problem)

    @model_validator(mode="after")
    def _kafka_security_fits(self) -> Settings:
        """Credentials and a CA file only with a protocol that uses them, and all of a SASL
        protocol's credentials (the SDK reads the same variables with the same checks)."""
        from sidecar.client.security import KafkaSecurity

        problem = KafkaSecurity.of(self).problem()
        if problem is not None:
            raise PydanticCustomError("kafka_security", "{problem}", {"problem": problem})
        return self

    def model_of(self, role: str) -> tuple[str, str | None, SecretStr | None]:
        """A role's model, API base and key. A role whose model is not set uses the judge's
        model, and the judge's base and key where it sets none of its own."""
        model, base, key = (getattr(self, f"{role}_{part}") for part in ROLE_PARTS)
        fields = self.model_fields_set
        if role == "judge" or f"{role}_model" in fields:
            return model, base, key
        return (
            self.judge_model,
            base if f"{role}_api_base" in fields else self.judge_api_base,
            key if f"{role}_api_key" in fields else self.judge_api_key,
        )

    def roles_on_judge_model(self) -> tuple[str, ...]:
        """The roles that fall back to a judge model someone chose."""
        if "judge_model" not in self.model_fields_set:
            return ()
        return tuple(
            role for role in ("task", "reflection") if f"{role}_model" not in self.model_fields_set
        )

    def role_fallback_notice(self) -> str | None:
        """The line said once at start when roles use the judge's model; None when none do."""
        roles = self.roles_on_judge_model()
        if not roles:
            return None
        variables = ", ".join(f"{ENV_PREFIX}{role.upper()}_MODEL" for role in roles)
        verb = "uses" if len(roles) == 1 else "use"
        return (
            f"{' and '.join(roles)} {verb} the judge's model {self.judge_model} "
            f"({variables} not set)"
        )


ROLE_PARTS = ("model", "api_base", "api_key")


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning the first validation problem into one line naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check across settings: its message names them itself
            raise ConfigError(first["msg"]) from None
        name = ENV_PREFIX + "_".join(str(part) for part in first["loc"][:1]).upper()
        given = first.get("input")
        secret = name.endswith(("_KEY", "_TOKEN", "_PASSWORD"))
        shown = "" if secret or isinstance(given, dict) or given is None else f" (got {given!r})"
        raise ConfigError(f"{name}: {_message(first)}{shown}") from None


def _message(error: Any) -> str:
    """pydantic's message without the `Value error, ` it puts before a validator's own words."""
    text = str(error["msg"])
    return text.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def misspelled_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each `SIDECAR_*` variable that is not a setting but is close to one: the
    setting it was meant to be would otherwise be left at its default without a word."""
    known = [ENV_PREFIX + name.upper() for name in Settings.model_fields]
    warnings = []
    for variable in sorted(environ):
        name = variable.upper()
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            warnings.append(f"{variable} is not a setting and is ignored: did you mean {close[0]}?")
    return warnings


class JudgeExample(BaseModel):
    """A worked example the judge reads before each reply: inputs, a reply, its verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: Annotated[dict[str, str], Field(min_length=1)]
    output: Annotated[str, Field(min_length=1, max_length=8000)]
    score: Annotated[float, Field(ge=0.0, le=1.0, strict=True, allow_inf_nan=False)]
    feedback: Annotated[str, Field(min_length=1, max_length=600)]


class JudgeBlock(BaseModel):
    """How to judge a prompt's replies: the rubric the judge model reads, and worked examples
    that fit it (None: the built-in ones with the built-in rubric, none with a custom rubric;
    [] means none); and/or a code metric, `package.module:function` taking (inputs, output)
    and returning (score 0..1, feedback), averaged with the judge model when both are given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rubric: Annotated[str | None, Field(min_length=1, max_length=20_000)] = None
    examples: Annotated[list[JudgeExample] | None, Field(max_length=20)] = None
    metric: str | None = None

    @field_validator("metric")
    @classmethod
    def _metric_imports(cls, value: str | None) -> str | None:
        """Imported now (the working directory importable), so a typo stops start-up."""
        if value is None:
            return value
        from sidecar.judge.metric import load_metric  # the judge package imports this module

        try:
            load_metric(value)
        except ConfigError as exc:
            raise PydanticCustomError("metric", "{problem}", {"problem": str(exc)}) from None
        return value

    @model_validator(mode="after")
    def _rubric_or_metric(self) -> JudgeBlock:
        if self.rubric is None and self.metric is None:
            raise PydanticCustomError("judge", "needs a rubric, a metric, or both")
        if self.rubric is None and self.examples is not None:
            raise PydanticCustomError(
                "judge", "examples need a rubric: they show the judge model how to apply it"
            )
        return self


class JudgingBlock(BaseModel):
    """What judging a prompt's live traffic may cost, and how old an event may be and still be
    judged; a value left out is the JUDGE_* setting of the same name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget_usd_per_hour: Annotated[float | None, Field(gt=0.0)] = None
    max_per_minute: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    max_event_age_hours: Annotated[float | None, Field(gt=0.0)] = None


SegmentName = Annotated[str, Field(min_length=1, max_length=200)]
Rate = Annotated[float, Field(ge=0.0, le=1.0, strict=False, allow_inf_nan=False)]


class SamplingBlock(BaseModel):
    """Which share of a prompt's events is kept: `rate` (else SAMPLE_RATE) and a rate per
    `metadata.segment`, e.g. every event of a rare segment and 5% of a common one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: Rate | None = None
    segments: dict[SegmentName, Rate] = Field(default_factory=dict)


class TaskMessage(BaseModel):
    """One message of the task template; `{name}` in its content is a component or input key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(min_length=1)]


class TaskBlock(BaseModel):
    """How the task model is asked: the chat messages, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: Annotated[list[TaskMessage], Field(min_length=1)]


class PromptSpec(BaseModel):
    """One managed prompt in CONFIG_FILE: its seed components, how to run it, how to judge it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
    seed: Annotated[dict[str, str], Field(min_length=1)]
    task: dict[str, Any] | None = None
    judge: JudgeBlock | None = None
    judging: JudgingBlock | None = None
    sampling: SamplingBlock | None = None

    @field_validator("task")
    @classmethod
    def _task_is_a_template(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Checked as a TaskBlock but kept as written: the template's exact text is part of
        the task path's identity (`task_version`), and the SDK renders the same mapping."""
        if value is not None:
            TaskBlock.model_validate(value)
        return value

    @model_validator(mode="after")
    def _template_uses_every_component(self) -> PromptSpec:
        """A component the template never names would never reach the task model, so GEPA
        would tune text nothing reads; a placeholder a letter away from one is a typo."""
        if self.task is None:
            return self
        used = placeholders(self.task)
        problem = None
        for name in sorted(used - set(self.seed)):
            close = difflib.get_close_matches(name, list(self.seed), n=1, cutoff=0.8)
            if close:
                problem = f"{{{name}}} is not a component of the seed: did you mean {{{close[0]}}}?"
                break
        missing = sorted(set(self.seed) - used)
        if problem is None and missing:
            names = ", ".join(f"{{{name}}}" for name in missing)
            problem = f"never names {names}, so the task model would never see it"
        if problem is not None:
            raise PydanticCustomError("task", "task.messages: {problem}", {"problem": problem})
        return self


class PromptsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: list[PromptSpec] = Field(default_factory=list)


def load_prompts_config(path: Path | None) -> PromptsConfig:
    """Read CONFIG_FILE; any problem is one line naming SIDECAR_CONFIG_FILE and where it is."""
    if path is None:
        return PromptsConfig()
    setting = f"{ENV_PREFIX}CONFIG_FILE"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problem = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{setting}: cannot read {path}: {problem}") from None
    try:
        config = PromptsConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        raise ConfigError(f"{setting}: {path}: {where}: {_message(first)}") from None
    names = [prompt.name for prompt in config.prompts]
    if len(names) != len(set(names)):
        raise ConfigError(f"{setting}: {path}: prompt names must be unique")
    return config
