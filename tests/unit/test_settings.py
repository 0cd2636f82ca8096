"""load_settings: bad values refuse to start with one line naming the setting."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.errors import ConfigError, SidecarError
from sidecar.settings import Settings, load_prompts_config, load_settings


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No inherited SIDECAR_* variables, and no stray .env in the working directory."""
    for name in list(os.environ):
        if name.upper().startswith("SIDECAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_config_error_is_a_sidecar_error() -> None:
    assert issubclass(ConfigError, SidecarError)


def test_defaults_load() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.sample_rate == 1.0
    assert settings.database_url == "sqlite:///./sidecar.db"
    assert settings.optimize_schedule == "3600"
    assert settings.http_port == 8791
    assert settings.traffic_topic == "gepa.traffic"
    assert settings.kafka_bootstrap_servers is None
    assert settings.config_file is None
    assert settings.kafka_heartbeat_interval_ms < settings.kafka_session_timeout_ms


@pytest.mark.parametrize(
    ("overrides", "env_name"),
    [
        ({"sample_rate": 1.5}, "SIDECAR_SAMPLE_RATE"),
        ({"sample_rate": -0.1}, "SIDECAR_SAMPLE_RATE"),
        ({"sample_rate": "abc"}, "SIDECAR_SAMPLE_RATE"),
        ({"http_port": 70000}, "SIDECAR_HTTP_PORT"),
        ({"http_port": -1}, "SIDECAR_HTTP_PORT"),
        ({"database_url": "mysql://x"}, "SIDECAR_DATABASE_URL"),
        ({"optimize_schedule": "every day"}, "SIDECAR_OPTIMIZE_SCHEDULE"),
        ({"optimize_schedule": "0"}, "SIDECAR_OPTIMIZE_SCHEDULE"),
        ({"optimize_schedule": "-5"}, "SIDECAR_OPTIMIZE_SCHEDULE"),
        ({"optimize_schedule": "* * * *"}, "SIDECAR_OPTIMIZE_SCHEDULE"),
        ({"optimize_schedule": "* * * * * *"}, "SIDECAR_OPTIMIZE_SCHEDULE"),
        ({"optimize_schedule": "*/15 * * * $"}, "SIDECAR_OPTIMIZE_SCHEDULE"),
        ({"optimize_schedule": "61 * * * *"}, "SIDECAR_OPTIMIZE_SCHEDULE"),
        ({"optimize_schedule": "0 25 * * *"}, "SIDECAR_OPTIMIZE_SCHEDULE"),
        ({"optimize_schedule": ""}, "SIDECAR_OPTIMIZE_SCHEDULE"),
        ({"kafka_heartbeat_interval_ms": 10_000}, "SIDECAR_KAFKA_HEARTBEAT_INTERVAL_MS"),
        (
            {"kafka_session_timeout_ms": 5_000, "kafka_heartbeat_interval_ms": 6_000},
            "SIDECAR_KAFKA_HEARTBEAT_INTERVAL_MS",
        ),
        ({"kafka_session_timeout_ms": 10}, "SIDECAR_KAFKA_SESSION_TIMEOUT_MS"),
        ({"ingest_batch_size": 0}, "SIDECAR_INGEST_BATCH_SIZE"),
        ({"run_budget_usd": -1}, "SIDECAR_RUN_BUDGET_USD"),
        ({"run_max_metric_calls": 0}, "SIDECAR_RUN_MAX_METRIC_CALLS"),
    ],
)
def test_bad_value_names_the_setting(overrides: dict[str, Any], env_name: str) -> None:
    message = config_error(**overrides)
    assert message.startswith(f"{env_name}:")


def test_message_shows_the_bad_value() -> None:
    assert "1.5" in config_error(sample_rate=1.5)
    assert "'mysql://x'" in config_error(database_url="mysql://x")


def test_heartbeat_equal_to_session_is_rejected() -> None:
    message = config_error(kafka_session_timeout_ms=5_000, kafka_heartbeat_interval_ms=5_000)
    assert message.startswith("SIDECAR_KAFKA_HEARTBEAT_INTERVAL_MS:")
    assert "SIDECAR_KAFKA_SESSION_TIMEOUT_MS" in message


def test_heartbeat_below_session_is_accepted() -> None:
    settings = load_settings(kafka_session_timeout_ms=5_000, kafka_heartbeat_interval_ms=4_999)
    assert settings.kafka_heartbeat_interval_ms == 4_999


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "prompts.yaml"
    message = config_error(config_file=str(missing))
    assert message == f"SIDECAR_CONFIG_FILE: no such file (got {str(missing)!r})"


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    message = config_error(config_file=str(tmp_path))
    assert message == f"SIDECAR_CONFIG_FILE: is a directory, not a file (got {str(tmp_path)!r})"


def test_a_validators_words_come_without_pydantics_prefix() -> None:
    assert config_error(optimize_schedule="a b") == (
        "SIDECAR_OPTIMIZE_SCHEDULE: must be a number of seconds or a 5-field cron expression "
        "(got 'a b')"
    )


def test_existing_config_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "prompts.yaml"
    path.write_text("prompts: []\n")
    assert load_settings(config_file=str(path)).config_file == path


@pytest.mark.parametrize(
    ("schedule", "stored"),
    [
        ("3600", "3600"),
        (" 60 ", "60"),
        ("*/15 * * * *", "*/15 * * * *"),
        ("0 3 * * MON-FRI", "0 3 * * MON-FRI"),
    ],
)
def test_valid_schedules(schedule: str, stored: str) -> None:
    assert load_settings(optimize_schedule=schedule).optimize_schedule == stored


@pytest.mark.parametrize(
    "url", ["sqlite:///./x.db", "sqlite://", "postgresql+psycopg://u@127.0.0.1:5432/test"]
)
def test_known_database_urls(url: str) -> None:
    assert load_settings(database_url=url).database_url == url


@pytest.mark.parametrize("rate", [0.0, 0.25, 1.0])
def test_sample_rate_bounds_are_inclusive(rate: float) -> None:
    assert load_settings(sample_rate=rate).sample_rate == rate


@pytest.mark.parametrize("port", [0, 65535])
def test_http_port_bounds(port: int) -> None:
    assert load_settings(http_port=port).http_port == port


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        settings.sample_rate = 0.5  # type: ignore[misc]


# --- from the environment ----------------------------------------------------------------


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_SAMPLE_RATE", "2")
    message = config_error()
    assert message.startswith("SIDECAR_SAMPLE_RATE:")
    assert "'2'" in message or "2" in message


def test_non_numeric_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_HTTP_PORT", "eighty")
    assert config_error().startswith("SIDECAR_HTTP_PORT:")


def test_env_heartbeat_not_below_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_KAFKA_SESSION_TIMEOUT_MS", "6000")
    monkeypatch.setenv("SIDECAR_KAFKA_HEARTBEAT_INTERVAL_MS", "6000")
    assert config_error().startswith("SIDECAR_KAFKA_HEARTBEAT_INTERVAL_MS:")


def test_env_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_SAMPLE_RATE", "0.25")
    monkeypatch.setenv("SIDECAR_OPTIMIZE_SCHEDULE", "*/5 * * * *")
    monkeypatch.setenv("SIDECAR_HTTP_PORT", "9090")
    settings = load_settings()
    assert settings.sample_rate == 0.25
    assert settings.optimize_schedule == "*/5 * * * *"
    assert settings.http_port == 9090


def test_override_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_SAMPLE_RATE", "2")
    assert load_settings(sample_rate=0.5).sample_rate == 0.5


def test_dotenv_in_working_directory_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text("SIDECAR_SAMPLE_RATE=7\n")
    assert config_error().startswith("SIDECAR_SAMPLE_RATE:")


# --- a prompt's judge block in CONFIG_FILE -----------------------------------------------


@pytest.fixture(autouse=True)
def restore_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a metric puts the working directory (here a tmp_path) on sys.path."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def config_with_judge(directory: Path, judge: dict[str, Any]) -> Path:
    path = directory / "prompts.yaml"
    prompt = {"name": "customer-care", "seed": {"system_prompt": "Help."}, "judge": judge}
    path.write_text(yaml.safe_dump({"prompts": [prompt]}))
    return path


def prompts_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_prompts_config(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_metric_in_the_working_directory_judges_alone(clean_env: Path) -> None:
    package = clean_env / "our_checks_pkg"
    package.mkdir()
    (package / "checks.py").write_text("def policy(inputs, output):\n    return 1.0, 'ok'\n")
    path = config_with_judge(clean_env, {"metric": "our_checks_pkg.checks:policy"})
    try:
        [spec] = load_prompts_config(path).prompts
    finally:
        for name in ("our_checks_pkg.checks", "our_checks_pkg"):
            sys.modules.pop(name, None)
    assert spec.judge is not None
    assert (spec.judge.rubric, spec.judge.metric) == (None, "our_checks_pkg.checks:policy")


def test_a_metric_typo_stops_start_up_in_one_line(clean_env: Path) -> None:
    path = config_with_judge(
        clean_env, {"rubric": "Score 1 when kind.", "metric": "no_checks_pkg.checks:policy"}
    )
    assert prompts_error(path) == (
        f"SIDECAR_CONFIG_FILE: {path}: prompts.0.judge.metric: cannot import "
        "no_checks_pkg.checks:policy: No module named 'no_checks_pkg'"
    )


def test_a_metric_reference_of_the_wrong_shape_is_named(clean_env: Path) -> None:
    path = config_with_judge(clean_env, {"metric": "checks.policy"})
    assert prompts_error(path) == (
        f"SIDECAR_CONFIG_FILE: {path}: prompts.0.judge.metric: "
        "must look like package.module:function, not 'checks.policy'"
    )


@pytest.mark.parametrize(
    ("judge", "problem"),
    [
        ({}, "needs a rubric, a metric, or both"),
        ({"examples": []}, "needs a rubric, a metric, or both"),
        (
            {"metric": "operator:add", "examples": []},
            "examples need a rubric: they show the judge model how to apply it",
        ),
    ],
)
def test_a_judge_block_needs_a_rubric_or_a_metric(
    clean_env: Path, judge: dict[str, Any], problem: str
) -> None:
    path = config_with_judge(clean_env, judge)
    assert prompts_error(path) == f"SIDECAR_CONFIG_FILE: {path}: prompts.0.judge: {problem}"
