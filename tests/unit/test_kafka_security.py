"""Kafka TLS/SASL settings: the mapping to kafka-python's options, the checks of combinations
(one line naming the setting, from Settings and from the SDK's environment reader alike), and
when the SDK takes its security options from the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sidecar.client.security import (
    KafkaSecurity,
    kafka_security_options,
    security_from_env,
    with_env_security,
)
from sidecar.errors import ConfigError
from sidecar.settings import load_settings

SASL = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "sidecar",
    "kafka_sasl_password": "s3cret",
}


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SIDECAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cafile(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def env(**values: str) -> dict[str, str]:
    return {f"SIDECAR_KAFKA_{name.upper()}": value for name, value in values.items()}


def test_the_defaults_are_plaintext_and_nothing_else() -> None:
    settings = load_settings()
    assert kafka_security_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert settings.kafka_auto_offset_reset == "latest"  # a first deploy skips the backlog


def test_sasl_ssl_with_a_ca_maps_to_kafka_pythons_option_names(cafile: Path) -> None:
    settings = load_settings(**SASL, kafka_ssl_cafile=str(cafile))
    assert kafka_security_options(settings) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "sidecar",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": str(cafile),
    }


def test_tls_alone_needs_no_credentials(cafile: Path) -> None:
    settings = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(cafile))
    assert kafka_security_options(settings) == {
        "security_protocol": "SSL",
        "ssl_cafile": str(cafile),
    }


@pytest.mark.parametrize(
    "missing", ["kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"]
)
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_sasl_protocol_without_a_credential_is_refused_naming_it(
    missing: str, protocol: str
) -> None:
    values: dict[str, Any] = {**SASL, "kafka_security_protocol": protocol}
    del values[missing]
    with pytest.raises(ConfigError) as raised:
        load_settings(**values)
    message = str(raised.value)
    assert message.startswith(f"SIDECAR_{missing.upper()}: needed with ")
    assert f"SIDECAR_KAFKA_SECURITY_PROTOCOL={protocol}" in message
    assert "s3cret" not in message and "\n" not in message


@pytest.mark.parametrize(
    "given", ["kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"]
)
@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_a_credential_with_a_protocol_that_ignores_it_is_refused(given: str, protocol: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(kafka_security_protocol=protocol, **{given: SASL[given]})
    message = str(raised.value)
    assert message.startswith(f"SIDECAR_{given.upper()}: unused with ")
    assert f"SIDECAR_KAFKA_SECURITY_PROTOCOL={protocol}" in message
    assert "s3cret" not in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_a_ca_file_without_tls_is_refused(protocol: str, cafile: Path) -> None:
    sasl = SASL if protocol.startswith("SASL") else {}
    values = {**sasl, "kafka_security_protocol": protocol, "kafka_ssl_cafile": str(cafile)}
    with pytest.raises(ConfigError, match=r"^SIDECAR_KAFKA_SSL_CAFILE: unused with "):
        load_settings(**values)


def test_unknown_values_and_a_missing_ca_file_name_their_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^SIDECAR_KAFKA_SECURITY_PROTOCOL: .*'TLS'"):
        load_settings(kafka_security_protocol="TLS")
    with pytest.raises(ConfigError, match=r"^SIDECAR_KAFKA_SASL_MECHANISM: "):
        load_settings(**{**SASL, "kafka_sasl_mechanism": "GSSAPI"})
    with pytest.raises(ConfigError, match=r"^SIDECAR_KAFKA_SSL_CAFILE: .*no such file"):
        load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "none"))


def test_the_environment_reader_agrees_with_settings(
    monkeypatch: pytest.MonkeyPatch, cafile: Path
) -> None:
    variables = env(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="app",
        sasl_password="pw",
        ssl_cafile=str(cafile),
    )
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert security_from_env().options() == kafka_security_options(load_settings())
    assert security_from_env(variables) == KafkaSecurity(
        "SASL_SSL", "PLAIN", "app", "pw", str(cafile)
    )


@pytest.mark.parametrize(
    ("variables", "setting"),
    [
        (env(security_protocol="SASL_SSL", sasl_mechanism="PLAIN"), "SASL_USERNAME"),
        (env(sasl_username="app"), "SASL_USERNAME"),
        (env(security_protocol="tls"), "SECURITY_PROTOCOL"),
        (env(security_protocol="SSL", ssl_cafile="/nowhere/ca.pem"), "SSL_CAFILE"),
    ],
)
def test_the_environment_reader_refuses_what_settings_refuse(
    variables: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^SIDECAR_KAFKA_{setting}: "):
        security_from_env(variables).options()


def test_empty_variables_are_unset() -> None:
    assert security_from_env(env(security_protocol="", sasl_username=" ")) == KafkaSecurity()


def test_the_sdk_takes_security_from_the_environment_only_when_the_app_gives_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIDECAR_KAFKA_SECURITY_PROTOCOL", "SSL")
    assert with_env_security({"client_id": "app"}) == {
        "security_protocol": "SSL",
        "client_id": "app",
    }
    own = {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}
    assert with_env_security(own) == own
    assert with_env_security({"ssl_check_hostname": False}) == {"ssl_check_hostname": False}


def test_an_unset_environment_gives_plaintext() -> None:
    assert with_env_security({}) == {"security_protocol": "PLAINTEXT"}
