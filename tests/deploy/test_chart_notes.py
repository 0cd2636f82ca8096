"""NOTES.txt, what `helm install` prints: the next steps (reach it, see candidates, approve,
watch metrics) and a warning for each try-out default still in place."""

from __future__ import annotations

from tests.deploy.chart_support import render_files, value_set


def _notes(name: str) -> str:
    return render_files(value_set(name))["gepa-sidecar/templates/NOTES.txt"]


def test_the_standalone_notes_give_the_next_steps() -> None:
    notes = _notes("production")
    exec_ = "kubectl -n support exec deploy/shop-gepa-sidecar -c gepa-sidecar -- gepa-sidecar"
    assert "kubectl -n support port-forward service/shop-gepa-sidecar 8791:8791" in notes
    assert f"{exec_} candidates --prompt customer-care --status awaiting_approval" in notes
    assert f"{exec_} approve --prompt customer-care VERSION --by YOUR_NAME" in notes
    assert 'curl -X POST -H "Authorization: Bearer $ADMIN_TOKEN"' in notes
    assert "/v1/prompts/customer-care/candidates/VERSION/approve" in notes
    assert "key ADMIN_TOKEN of the Secret gepa-sidecar" in notes
    assert "http://127.0.0.1:8791/metrics" in notes
    assert "through the ServiceMonitor shop-gepa-sidecar" in notes
    assert "the PrometheusRule shop-gepa-sidecar" in notes
    assert "WARNING" not in notes


def test_the_try_out_defaults_are_named() -> None:
    notes = _notes("default")
    assert "WARNING: no existingSecret" in notes
    assert "WARNING: the database is SQLite in an emptyDir" in notes
    assert "WARNING: prompts is empty" in notes
    assert "Nothing scrapes them yet" in notes


def test_the_embedded_notes_show_the_include_lines() -> None:
    notes = _notes("embedded")
    assert '{{- include "gepa-sidecar.container" (index .Subcharts "gepa-sidecar")' in notes
    assert '{{- include "gepa-sidecar.volumes" (index .Subcharts "gepa-sidecar")' in notes
    assert "mount the volume gepa-sidecar-prompts read-only" in notes
    assert "kubectl -n support exec POD -c gepa-sidecar -- gepa-sidecar approve" in notes
    assert "through the PodMonitor shop-gepa-sidecar" in notes
    assert "Each of your chatbot's pods keeps its own" in notes
