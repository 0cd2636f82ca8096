"""Where a HotPrompt reads its document from, chosen by the source URL's scheme.

    file:///srv/prompts/customer-care.json     the file the sidecar publishes (watched)
    http://sidecar:8791                          the sidecar's GET /v1/prompts/{name}/active
    kafka://broker-1:9092,broker-2:9092/gepa.prompts   the prompts topic (latest record per key)

A bad URL is a ConfigError at construction: it is the one mistake that should stop the app's
start, because no retry can mend it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sidecar.client.file_source import FileSource
from sidecar.client.http_source import HttpSource
from sidecar.client.receiver import Source
from sidecar.errors import ConfigError

DEFAULT_PROMPTS_TOPIC = "gepa.prompts"


def source_for(
    url: str, name: str, poll_interval_s: float, kafka_options: dict[str, Any]
) -> Source:
    """The source that `url` names, or a ConfigError saying what is accepted."""
    parts = urlsplit(url)
    if kafka_options and parts.scheme != "kafka":
        raise ConfigError(
            f"source {url!r}: Kafka options {sorted(kafka_options)} need a kafka source"
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ConfigError(f"source {url!r}: a file URL is file:///absolute/path/to/name.json")
        return FileSource(Path(unquote(parts.path)), poll_interval_s)
    if parts.scheme in ("http", "https"):
        if not parts.netloc:
            raise ConfigError(f"source {url!r}: an http source is the sidecar's base URL")
        return HttpSource(url.rstrip("/"), name, poll_interval_s)
    if parts.scheme == "kafka":
        # kafka-python takes ~0.15 s to import: an app on a file or http source never pays it.
        from sidecar.client.kafka_source import KafkaSource

        if not parts.netloc:
            raise ConfigError(f"source {url!r}: a kafka source is kafka://host:port[,…]/topic")
        topic = parts.path.strip("/") or DEFAULT_PROMPTS_TOPIC
        return KafkaSource(parts.netloc, topic, name, poll_interval_s, kafka_options)
    raise ConfigError(
        f"source {url!r}: expected file:///path/name.json, http://host:port "
        "or kafka://host:port/topic"
    )
