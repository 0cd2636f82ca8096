"""One error tree for the whole sidecar, so callers catch what they mean.

SidecarError
├── ConfigError          a setting or the config file is wrong; the process refuses to start
├── StoreError           the database refused or failed a call (SQLAlchemy errors translated)
├── BrokerError          the Kafka cluster or the embedded broker failed (kafka-python errors)
└── InputError           a CLI or API caller asked for something that is not valid
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
