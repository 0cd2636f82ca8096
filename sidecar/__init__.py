"""gepa-sidecar: improves a production chatbot's prompt from its own live traffic, safely.

The public names below are the wire schemas, the settings and the error tree; everything else
is reached through the `gepa-sidecar` command or the HTTP API.
"""

from sidecar.errors import (
    BrokerError,
    ConfigError,
    InputError,
    LlmError,
    SidecarError,
    StoreError,
)
from sidecar.events import PromptDocument, TrafficEvent, canonical_json, components_sha256
from sidecar.settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "ConfigError",
    "InputError",
    "LlmError",
    "PromptDocument",
    "Settings",
    "SidecarError",
    "StoreError",
    "TrafficEvent",
    "__version__",
    "canonical_json",
    "components_sha256",
    "load_settings",
]
