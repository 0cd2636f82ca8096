"""Settings a newcomer gets wrong without noticing: roles left on the default model, a mistyped
variable name, a task template whose placeholders name nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.errors import ConfigError
from sidecar.llm.gateway import Gateway
from sidecar.settings import load_prompts_config, load_settings, misspelled_variables
from tests.unit.test_settings import clean_env

__all__ = ["clean_env"]  # autouse: no inherited SIDECAR_* variable, no stray .env


def test_roles_left_unset_use_the_judges_model_base_and_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's "beside your chatbot" example sets the judge only."""
    monkeypatch.setenv("SIDECAR_JUDGE_MODEL", "openai/gpt-4o-mini")
    monkeypatch.setenv("SIDECAR_JUDGE_API_BASE", "http://models:8080/v1")
    monkeypatch.setenv("SIDECAR_JUDGE_API_KEY", "sk-judge")
    settings = load_settings()
    roles = Gateway(settings).roles
    for role in ("judge", "task", "reflection"):
        assert (roles[role].model, roles[role].api_base, roles[role].api_key) == (
            "openai/gpt-4o-mini",
            "http://models:8080/v1",
            "sk-judge",
        )
    assert settings.roles_on_judge_model() == ("task", "reflection")
    assert settings.role_fallback_notice() == (
        "task and reflection use the judge's model openai/gpt-4o-mini "
        "(SIDECAR_TASK_MODEL, SIDECAR_REFLECTION_MODEL not set)"
    )


def test_a_role_given_its_own_model_keeps_its_own_base_and_key() -> None:
    settings = load_settings(
        judge_model="openai/judge",
        judge_api_base="http://judge/v1",
        judge_api_key="sk-judge",
        task_model="anthropic/claude-haiku",
    )
    roles = Gateway(settings).roles
    assert (roles["task"].model, roles["task"].api_base, roles["task"].api_key) == (
        "anthropic/claude-haiku",
        None,
        None,
    )
    assert roles["reflection"].model == "openai/judge"
    assert settings.roles_on_judge_model() == ("reflection",)
    assert settings.role_fallback_notice() == (
        "reflection uses the judge's model openai/judge (SIDECAR_REFLECTION_MODEL not set)"
    )


def test_a_role_without_a_model_keeps_a_base_it_sets_itself() -> None:
    settings = load_settings(judge_model="openai/judge", task_api_base="http://task/v1")
    assert settings.model_of("task")[:2] == ("openai/judge", "http://task/v1")


def test_no_notice_when_no_judge_model_was_chosen() -> None:
    settings = load_settings()
    assert settings.roles_on_judge_model() == ()
    assert settings.role_fallback_notice() is None
    assert Gateway(settings).roles["task"].model == "openai/local"


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("SIDECAR_JUDGE_MODLE", "SIDECAR_JUDGE_MODEL"),
        ("SIDECAR_KAFKA_BOOTSTRAP_SERVER", "SIDECAR_KAFKA_BOOTSTRAP_SERVERS"),
        ("sidecar_sample_rat", "SIDECAR_SAMPLE_RATE"),
    ],
)
def test_a_misspelled_variable_is_named_with_what_it_was_meant_to_be(
    variable: str, meant: str
) -> None:
    assert misspelled_variables({variable: "x", "SIDECAR_JUDGE_MODEL": "y", "PATH": "/"}) == [
        f"{variable} is not a setting and is ignored: did you mean {meant}?"
    ]


def test_variables_that_are_settings_or_unrelated_are_not_warned_about() -> None:
    environ = {"SIDECAR_JUDGE_MODEL": "x", "SIDECAR_TEST_ARTIFACTS": "/tmp", "HOME": "/root"}
    assert misspelled_variables(environ) == []


def config_problem(tmp_path: Path, prompt: dict[str, Any]) -> str:
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump({"prompts": [prompt]}))
    with pytest.raises(ConfigError) as info:
        load_prompts_config(path)
    message = str(info.value)
    assert "\n" not in message and "Value error" not in message
    return message.removeprefix(f"SIDECAR_CONFIG_FILE: {path}: ")


def prompt_with(*messages: dict[str, str]) -> dict[str, Any]:
    return {
        "name": "care",
        "seed": {"system_prompt": "Be kind."},
        "task": {"messages": list(messages)},
    }


def test_a_placeholder_one_letter_off_a_component_is_a_typo(tmp_path: Path) -> None:
    prompt = prompt_with(
        {"role": "system", "content": "{system_promt}"},
        {"role": "user", "content": "{user_message}"},
    )
    assert config_problem(tmp_path, prompt) == (
        "prompts.0: task.messages: {system_promt} is not a component of the seed: "
        "did you mean {system_prompt}?"
    )


def test_a_component_the_template_never_names_is_refused(tmp_path: Path) -> None:
    prompt = prompt_with({"role": "user", "content": "{user_message}"})
    assert config_problem(tmp_path, prompt) == (
        "prompts.0: task.messages: never names {system_prompt}, so the task model would "
        "never see it"
    )


def test_a_message_role_must_be_a_chat_role(tmp_path: Path) -> None:
    prompt = prompt_with(
        {"role": "sytem", "content": "{system_prompt}"},
        {"role": "user", "content": "{user_message}"},
    )
    assert config_problem(tmp_path, prompt).startswith("prompts.0.task.messages.0.role: ")
    assert "'system', 'user' or 'assistant'" in config_problem(tmp_path, prompt)


@pytest.mark.parametrize(
    "task",
    [{}, {"messages": []}, {"messages": [{"role": "user"}]}, {"template": "x", "messages": []}],
)
def test_a_task_block_of_the_wrong_shape_is_named(tmp_path: Path, task: dict[str, Any]) -> None:
    prompt = {"name": "care", "seed": {"system_prompt": "Be kind."}, "task": task}
    assert config_problem(tmp_path, prompt).startswith("prompts.0.task")


def test_a_good_template_is_kept_exactly_as_written(tmp_path: Path) -> None:
    """Its text is part of the task path's identity, so it must not be rewritten."""
    messages = [
        {"role": "system", "content": '{system_prompt}\nReply in JSON like {"a": 1}.'},
        {"role": "user", "content": "{user_message}"},
    ]
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump({"prompts": [prompt_with(*messages)]}))
    assert load_prompts_config(path).prompts[0].task == {"messages": messages}
