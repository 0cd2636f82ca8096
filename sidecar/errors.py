"""One error tree for the whole sidecar, so callers catch what they mean.

SidecarError
├── ConfigError          a setting or the config file is wrong; the process refuses to start
├── StoreError           the database refused or failed a call (SQLAlchemy errors translated)
├── BrokerError          the Kafka cluster or the embedded broker failed (kafka-python errors)
├── InputError           a CLI or API caller asked for something that is not valid
├── PublishError         a publish target (file, topic) did not take a version; retried later
└── LlmError             a model provider failed or refused, after the gateway's retries
"""


class SidecarError(Exception):
    """Root of every error the sidecar raises on purpose."""


class ConfigError(SidecarError):
    """A setting is missing or invalid; the message names it in one line."""


class StoreError(SidecarError):
    """The database could not do what was asked; the caller may retry."""


class BrokerError(SidecarError):
    """The broker could not be started or reached."""


class InputError(SidecarError):
    """A person or client asked for something invalid; the message says why."""


class PublishError(SidecarError):
    """A target could not be delivered to (or asked); the outbox row stays pending."""


class LlmError(SidecarError):
    """A model call failed; `retryable` says whether asking again later may succeed.

    `status` is the provider's HTTP status when there was one; `retry_after_s` its hint;
    `kind` a bounded name for what went wrong (`AuthenticationError`, `APIConnectionError`,
    `timeout`, ...), fit for a metric label; `detail` the provider's own words, in one line.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
        kind: str = "error",
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s
        self.kind = kind
        self.detail = detail or message
