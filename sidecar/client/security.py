"""Kafka TLS/SASL: the five SIDECAR_KAFKA_* security settings as kafka-python options.

One mapping and one set of checks for every client: the sidecar's (from its Settings) and the
serving app's (from the same environment variables, so an app beside the sidecar reaches a
managed cluster without importing the server's settings). A combination that cannot work (a
SASL protocol without credentials, credentials or a CA file the protocol never uses) is refused
at start with one line naming the setting, rather than found at the first connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sidecar.errors import ConfigError

ENV_PREFIX = "SIDECAR_KAFKA_"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SECURITY_OPTION_PREFIXES = ("security_", "sasl_", "ssl_")
"""kafka-python options that say how to connect securely; an app that passes any of them has
chosen for itself, and the environment is not consulted."""


class SecretText(Protocol):
    def get_secret_value(self) -> str: ...


class SecuritySettings(Protocol):
    """The part of the sidecar's Settings this module reads (the SDK never imports Settings)."""

    @property
    def kafka_security_protocol(self) -> str: ...

    @property
    def kafka_sasl_mechanism(self) -> str | None: ...

    @property
    def kafka_sasl_username(self) -> str | None: ...

    @property
    def kafka_sasl_password(self) -> SecretText | None: ...

    @property
    def kafka_ssl_cafile(self) -> Path | None: ...


@dataclass(frozen=True)
class KafkaSecurity:
    """How to connect: the protocol, SASL credentials (SASL_* protocols) and a CA file (TLS)."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    cafile: str | None = None

    @classmethod
    def of(cls, settings: SecuritySettings) -> KafkaSecurity:
        password = settings.kafka_sasl_password
        cafile = settings.kafka_ssl_cafile
        return cls(
            protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            password=None if password is None else password.get_secret_value(),
            cafile=None if cafile is None else str(cafile),
        )

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def problem(self) -> str | None:
        """What makes this combination unusable, as one line naming the setting; None if fine."""
        if self.protocol not in PROTOCOLS:
            return _not_one_of("SECURITY_PROTOCOL", PROTOCOLS, self.protocol)
        if self.mechanism is not None and self.mechanism not in MECHANISMS:
            return _not_one_of("SASL_MECHANISM", MECHANISMS, self.mechanism)
        credentials = {
            "SASL_MECHANISM": self.mechanism,
            "SASL_USERNAME": self.username,
            "SASL_PASSWORD": self.password,
        }
        protocol = f"{ENV_PREFIX}SECURITY_PROTOCOL={self.protocol}"
        for name, value in credentials.items():
            if self.sasl and not value:
                return f"{ENV_PREFIX}{name}: needed with {protocol}"
            if not self.sasl and value:
                return f"{ENV_PREFIX}{name}: unused with {protocol} (SASL_* protocols use it)"
        if self.cafile and self.protocol not in TLS_PROTOCOLS:
            return f"{ENV_PREFIX}SSL_CAFILE: unused with {protocol} (SSL, SASL_SSL use it)"
        return None

    def options(self) -> dict[str, str]:
        """kafka-python's options for this combination; a ConfigError when it cannot work."""
        problem = self.problem()
        if problem is not None:
            raise ConfigError(problem)
        options = {"security_protocol": self.protocol}
        if self.sasl:
            options["sasl_mechanism"] = str(self.mechanism)
            options["sasl_plain_username"] = str(self.username)
            options["sasl_plain_password"] = str(self.password)
        if self.cafile:
            options["ssl_cafile"] = self.cafile
        return options


def kafka_security_options(settings: SecuritySettings) -> dict[str, str]:
    """The options every Kafka client the sidecar builds is given."""
    return KafkaSecurity.of(settings).options()


def security_from_env(environ: Mapping[str, str] | None = None) -> KafkaSecurity:
    """The SIDECAR_KAFKA_* security variables as the sidecar reads them (empty means unset)."""
    env = os.environ if environ is None else environ

    def value(name: str) -> str | None:
        return env.get(ENV_PREFIX + name, "").strip() or None

    cafile = value("SSL_CAFILE")
    if cafile is not None and not Path(cafile).is_file():
        raise ConfigError(f"{ENV_PREFIX}SSL_CAFILE: no such file: {cafile}")
    return KafkaSecurity(
        protocol=value("SECURITY_PROTOCOL") or "PLAINTEXT",
        mechanism=value("SASL_MECHANISM"),
        username=value("SASL_USERNAME"),
        password=env.get(ENV_PREFIX + "SASL_PASSWORD") or None,
        cafile=cafile,
    )


def with_env_security(options: Mapping[str, Any]) -> dict[str, Any]:
    """An app's Kafka options, plus the environment's security options when the app gave none
    of its own (so the SIDECAR_KAFKA_* variables set for the sidecar serve the app too)."""
    if any(key.startswith(SECURITY_OPTION_PREFIXES) for key in options):
        return dict(options)
    return {**security_from_env().options(), **options}


def _not_one_of(name: str, allowed: tuple[str, ...], given: str) -> str:
    return f"{ENV_PREFIX}{name}: must be one of {', '.join(allowed)} (got {given!r})"
