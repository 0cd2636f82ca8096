"""What a version looks like outside the sidecar: the PromptDocument of a candidate row, its JSON
text, and DSPy's saved-program JSON (loaded by a real `dspy.Module`)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dspy
import pytest

from sidecar.errors import InputError
from sidecar.events import PromptDocument, components_sha256
from sidecar.promote.documents import document_evidence, document_for, document_json
from sidecar.promote.dspy_export import DSPY_FORMAT_VERSION, dspy_json, dspy_program
from sidecar.store.database import aware
from sidecar.store.tables import Candidate

COMPONENTS = {"respond": "Answer from the order record; name the tracking number."}
SHADOW = {
    "shadow_mean": 0.82,
    "champion_mean": 0.74,
    "n": 40,
    "p_value": 0.01,
    "mean_delta": 0.08,
    "mode": "pointwise",
    "segments": {"billing": {"n": 20, "delta": 0.05}},
    "decision": "pass",
    "reason": "better on 40 pairs",
}


def candidate(**fields: Any) -> Candidate:
    values: dict[str, Any] = {
        "prompt_name": "customer-care",
        "version": 7,
        "status": "active",
        "components": dict(COMPONENTS),
        "sha256": components_sha256(COMPONENTS),
        "parents": [5, 6],
        "created_at": datetime(2026, 11, 20, 9, 30),
    }
    values.update(fields)
    return Candidate(**values)


def test_document_of_a_row_carries_its_version_and_a_verified_sha256() -> None:
    document = document_for(candidate())

    assert (document.name, document.version, document.parents) == ("customer-care", 7, [5, 6])
    assert document.components == COMPONENTS
    assert document.sha256 == components_sha256(COMPONENTS)
    assert PromptDocument.model_validate_json(document_json(document)) == document


def test_naive_store_timestamps_become_utc() -> None:
    """SQLite hands back naive datetimes; the store wrote them in UTC."""
    document = document_for(
        candidate(approved_by="row-approver", approved_at=datetime(2026, 11, 21, 8, 0))
    )

    assert document.created_at == datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    assert document.approved_at == datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    assert document.approved_by == "row-approver"


def test_aware_timestamps_keep_their_zone_and_none_stays_none() -> None:
    paris = datetime(2026, 11, 20, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    assert aware(paris) is paris
    assert aware(None) is None


def test_approval_given_at_publish_time_overrides_the_row() -> None:
    moment = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    document = document_for(
        candidate(approved_by="old", approved_at=datetime(2026, 1, 1)), "alice", moment
    )
    assert (document.approved_by, document.approved_at) == ("alice", moment)


def test_evidence_is_the_shadow_figures_only() -> None:
    """The optimizer's Pareto figures and the gate's segments stay in the store."""
    row = candidate(evidence={"pareto_mean": 0.9, "shadow": SHADOW})

    evidence = document_evidence(row)
    assert evidence == {
        "shadow_mean": 0.82,
        "champion_mean": 0.74,
        "n": 40,
        "p_value": 0.01,
        "mean_delta": 0.08,
        "mode": "pointwise",
    }
    document = document_for(row)
    assert document.evidence is not None
    assert document.evidence.model_dump() == evidence


def test_a_forced_approval_says_so_with_or_without_figures() -> None:
    assert document_evidence(candidate(evidence={"forced": True})) == {"forced": True}
    with_figures = document_evidence(candidate(evidence={"shadow": SHADOW, "forced": True}))
    assert with_figures is not None
    assert with_figures["forced"] is True
    assert with_figures["shadow_mean"] == 0.82


def test_no_shadow_figures_means_no_evidence() -> None:
    assert document_evidence(candidate()) is None
    assert document_evidence(candidate(evidence={"pareto_mean": 0.9})) is None
    assert document_for(candidate(evidence={"pareto_mean": 0.9})).evidence is None


def test_document_json_is_stable_and_ends_with_a_newline() -> None:
    text = document_json(document_for(candidate()))
    assert text == document_json(document_for(candidate()))
    assert text.endswith("}\n")
    assert json.loads(text)["sha256"] == components_sha256(COMPONENTS)


def two_part_document() -> PromptDocument:
    return PromptDocument.build(
        name="customer-care",
        version=3,
        components={"respond": "Be brief.", "cot.predict": "Think about the refund policy."},
        created_at=datetime(2026, 11, 20, tzinfo=UTC),
    )


def test_dspy_program_has_one_predictor_state_per_component() -> None:
    program = dspy_program(two_part_document())

    assert set(program) == {"respond", "cot.predict", "metadata"}
    assert program["respond"] == {
        "traces": [],
        "train": [],
        "demos": [],
        "signature": {"instructions": "Be brief.", "fields": []},
        "lm": None,
    }
    assert program["cot.predict"]["signature"]["instructions"] == "Think about the refund policy."
    assert program["metadata"]["dependency_versions"] == {"dspy": DSPY_FORMAT_VERSION}
    assert program["metadata"]["gepa_sidecar"] == {
        "name": "customer-care",
        "version": 3,
        "sha256": two_part_document().sha256,
    }
    assert json.loads(dspy_json(two_part_document())) == program


def test_a_component_named_metadata_cannot_be_exported_to_dspy() -> None:
    document = PromptDocument.build(
        name="odd", version=1, components={"metadata": "x"}, created_at=datetime.now(UTC)
    )
    with pytest.raises(InputError, match="component named 'metadata'") as caught:
        dspy_program(document)
    assert "\n" not in str(caught.value)


class SupportProgram(dspy.Module):
    """An app's program whose predictors are named like the prompt's components."""

    def __init__(self) -> None:
        super().__init__()
        self.respond = dspy.Predict("question -> answer")
        self.cot = dspy.ChainOfThought("question -> answer")

    def forward(self, question: str) -> Any:
        return self.respond(question=self.cot(question=question).answer)


def signature_fields(predictor: Any) -> list[dict[str, str]]:
    return list(predictor.signature.dump_state()["fields"])


def test_dspy_loads_the_export_with_the_instructions_in_place(tmp_path: Path) -> None:
    program = SupportProgram()
    fields_before = {
        "respond": signature_fields(program.respond),
        "cot": signature_fields(program.cot.predict),
    }
    path = tmp_path / "program.json"
    path.write_text(dspy_json(two_part_document()), encoding="utf-8")

    program.load(path)

    assert program.respond.signature.instructions == "Be brief."
    assert program.cot.predict.signature.instructions == "Think about the refund policy."
    # The app's own field prefixes and descriptions are kept.
    assert signature_fields(program.respond) == fields_before["respond"]
    assert signature_fields(program.cot.predict) == fields_before["cot"]
    assert program.respond.demos == []


def test_dspy_refuses_an_export_that_misses_one_of_its_predictors(tmp_path: Path) -> None:
    """The documented limit: the prompt's components must name every predictor of the app."""
    document = PromptDocument.build(
        name="customer-care",
        version=4,
        components={"respond": "Be brief."},
        created_at=datetime(2026, 11, 20, tzinfo=UTC),
    )
    program = SupportProgram()
    path = tmp_path / "program.json"
    path.write_text(dspy_json(document), encoding="utf-8")

    with pytest.raises(KeyError, match=re.escape("cot.predict")):
        program.load(path)
    assert program.respond.signature.instructions != "Be brief."
