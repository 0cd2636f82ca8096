"""What a version looks like outside the sidecar: the PromptDocument every target receives, in
the JSON text the file target writes (DSPy's saved-program shape is in `dspy_export.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sidecar.events import PromptDocument
from sidecar.store.database import aware
from sidecar.store.tables import Candidate

DOCUMENT_EVIDENCE = ("shadow_mean", "champion_mean", "n", "p_value", "mean_delta", "mode")
"""The shadow figures a document carries: what a reviewer of the serving app needs to see."""


def document_evidence(candidate: Candidate) -> dict[str, Any] | None:
    """The shadow gate's figures (or, for a version approved without them, that it was forced)."""
    evidence = candidate.evidence or {}
    shadow = evidence.get("shadow") or {}
    figures = {key: shadow[key] for key in DOCUMENT_EVIDENCE if key in shadow}
    if evidence.get("forced"):
        figures["forced"] = True
    return figures or None


def document_for(
    candidate: Candidate, approved_by: str | None = None, approved_at: datetime | None = None
) -> PromptDocument:
    """The document of a version as it is published; approval fields default to the row's."""
    return PromptDocument.build(
        name=candidate.prompt_name,
        version=candidate.version,
        components=dict(candidate.components),
        created_at=aware(candidate.created_at),
        parents=list(candidate.parents),
        approved_by=approved_by or candidate.approved_by,
        approved_at=aware(approved_at or candidate.approved_at),
        evidence=document_evidence(candidate),
    )


def document_json(document: PromptDocument) -> str:
    """The document as the file target writes it and `export --format json` prints it: indented
    for people who read the file, in the schema's field order, ending with a newline."""
    return document.model_dump_json(indent=2) + "\n"
