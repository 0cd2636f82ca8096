"""Wire schemas: what the serving app sends (TrafficEvent) and what the sidecar publishes
(PromptDocument). Both carry `schema_version`; readers reject versions they do not know."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    field_validator,
    model_validator,
)

EVENT_SCHEMA_VERSION: Final = 1
PROMPT_SCHEMA_VERSION: Final = 1
MAX_EVENT_BYTES = 1024 * 1024

PromptName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]


class TrafficEvent(BaseModel):
    """One sampled request/response of the serving app; `inputs` are GEPA's unlabeled inputs."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    schema_version: Literal[1]
    event_id: uuid.UUID
    prompt_name: PromptName
    prompt_version: Annotated[int, Field(ge=1)]
    timestamp: AwareDatetime
    inputs: dict[StrictStr, StrictStr]
    output: StrictStr
    trace: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("schema_version", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        if type(value) is not int:
            raise ValueError(f"schema_version must be the integer {EVENT_SCHEMA_VERSION}")
        return value

    @property
    def key(self) -> bytes:
        """The Kafka record key: the event id, so redeliveries land in one partition."""
        return str(self.event_id).encode()

    @property
    def segment(self) -> str | None:
        """`metadata.segment` when it is a string: what GEPA stratifies its splits by."""
        value = (self.metadata or {}).get("segment")
        return value if isinstance(value, str) else None


class Evidence(BaseModel):
    """Why a version was approved: its shadow comparison against the champion."""

    model_config = ConfigDict(extra="allow", frozen=True)

    shadow_mean: float | None = None
    champion_mean: float | None = None
    n: int | None = None
    p_value: float | None = None


def canonical_json(components: dict[str, str]) -> bytes:
    """The exact bytes whose sha256 identifies a prompt: the SDK recomputes it to verify."""
    return json.dumps(components, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def components_sha256(components: dict[str, str]) -> str:
    return hashlib.sha256(canonical_json(components)).hexdigest()


class PromptDocument(BaseModel):
    """A published prompt version; `sha256` must match `components` or the document is refused."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = PROMPT_SCHEMA_VERSION
    name: PromptName
    version: Annotated[int, Field(ge=1)]
    parents: list[int] = Field(default_factory=list)
    components: dict[StrictStr, StrictStr] = Field(min_length=1)
    created_at: AwareDatetime
    approved_by: str | None = None
    approved_at: AwareDatetime | None = None
    evidence: Evidence | None = None
    sha256: str

    @model_validator(mode="after")
    def _sha256_matches(self) -> Self:
        expected = components_sha256(self.components)
        if self.sha256 != expected:
            raise ValueError(f"sha256 {self.sha256!r} does not match components ({expected})")
        return self

    @classmethod
    def build(
        cls,
        *,
        name: str,
        version: int,
        components: dict[str, str],
        created_at: datetime,
        **fields: Any,
    ) -> PromptDocument:
        """Make a document whose sha256 is computed here, never typed in by hand."""
        return cls(
            name=name,
            version=version,
            components=components,
            created_at=created_at,
            sha256=components_sha256(components),
            **fields,
        )


@dataclass(frozen=True, slots=True)
class ConsumedEvent:
    """A valid event, where it was read in the traffic topic, and the rate ingest kept it at
    (None where no rate applies: an event stored by other means)."""

    event: TrafficEvent
    partition: int
    offset: int
    sample_rate: float | None = None
