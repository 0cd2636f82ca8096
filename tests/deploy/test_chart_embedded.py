"""Embedded mode: a chatbot's own chart (helm/examples/chatbot) puts gepa-sidecar in its pod as a
native sidecar with `include "gepa-sidecar.container"`, the way a user's chart would: its
dependency built by Helm from the `file://` reference, then linted and rendered."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.deploy.chart_support import (
    CHART_DIR,
    EXAMPLE_DIR,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    PROMPTS_DIR,
    RELEASE,
    Manifest,
    assert_real_settings,
    assert_sidecar_contract,
    manifests,
    of_kind,
    plain_env,
    pod_spec,
    render,
    render_error,
    sidecar_container,
    validate_manifest,
    value_set,
    walk,
)

Example = tuple[Path, helm_python.Chart]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Example:
    """The example chart and the chart beside it, as in the repository, in a temp dir (Helm
    writes the dependency's archive into charts/)."""
    helm = tmp_path_factory.mktemp("repo") / "helm"
    shutil.copytree(CHART_DIR, helm / "gepa-sidecar")
    shutil.copytree(EXAMPLE_DIR, helm / "examples" / "chatbot", ignore=_made_by_helm)
    parent = helm / "examples" / "chatbot"
    helm_python.dependency_update(parent)
    return parent, helm_python.Chart.load(parent)


def _made_by_helm(_: str, names: list[str]) -> list[str]:
    return [name for name in names if name in {"charts", "Chart.lock"}]


@pytest.fixture(scope="module")
def found(example: Example) -> list[Manifest]:
    _, loaded = example
    return manifests(loaded.render({}, name=RELEASE, namespace=NAMESPACE))


@pytest.fixture(scope="module")
def spec(found: list[Manifest]) -> dict[str, Any]:
    (chatbot,) = of_kind(found, "Deployment")
    return pod_spec(chatbot)


def test_helm_builds_the_dependency_and_lints_both_charts(example: Example) -> None:
    parent, _ = example
    (dependency,) = helm_python.dependency_list(parent)
    assert (dependency["name"], dependency["status"]) == ("gepa-sidecar", "ok")
    report = helm_python.lint(parent, strict=True, with_subcharts=True, kube_version="v1.29.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes(found: list[Manifest], version: str) -> None:
    for manifest in found:
        validate_manifest(manifest.body, version)


def test_the_subchart_adds_only_its_config_and_monitoring(found: list[Manifest]) -> None:
    from_subchart = sorted(m.kind for m in found if "/charts/gepa-sidecar/" in m.source)
    assert from_subchart == ["ConfigMap", "PodMonitor"]
    assert sorted(m.kind for m in found) == ["ConfigMap", "Deployment", "PodMonitor", "Service"]


def test_the_sidecar_is_a_native_sidecar(spec: dict[str, Any]) -> None:
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "gepa-sidecar"
    assert sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["chatbot"]
    assert_sidecar_contract(spec, grace=20, port_name="gepa-http")
    assert_real_settings(sidecar)


def test_the_pod_grace_covers_the_chatbot_then_the_sidecar(spec: dict[str, Any]) -> None:
    assert spec["terminationGracePeriodSeconds"] == 15 + 20 + 10


def test_the_chatbot_reads_the_published_prompts_read_only(spec: dict[str, Any]) -> None:
    sidecar = sidecar_container(spec)
    (chatbot,) = spec["containers"]
    (mount,) = chatbot["volumeMounts"]
    assert mount["readOnly"] is True
    assert mount["mountPath"] == plain_env(sidecar)["SIDECAR_PUBLISH_DIR"] == PROMPTS_DIR
    (shared,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in shared
    (writer,) = [m for m in sidecar["volumeMounts"] if m["name"] == mount["name"]]
    assert not writer.get("readOnly")


def test_port_names_are_unique_in_the_pod(spec: dict[str, Any]) -> None:
    ports = [p["name"] for c in spec["initContainers"] + spec["containers"] for p in c["ports"]]
    assert sorted(ports) == ["gepa-http", "http"]


def test_the_pod_monitor_scrapes_the_sidecar_in_the_chatbots_pods(
    found: list[Manifest], spec: dict[str, Any]
) -> None:
    (chatbot,) = of_kind(found, "Deployment")
    (monitor,) = of_kind(found, "PodMonitor")
    labels = chatbot["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "gepa-http"
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_the_pod_rolls_when_the_prompts_config_changes(
    found: list[Manifest], spec: dict[str, Any]
) -> None:
    (config_map,) = of_kind(found, "ConfigMap")
    (volume,) = [v for v in spec["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (chatbot,) = of_kind(found, "Deployment")
    annotations = chatbot["spec"]["template"]["metadata"]["annotations"]
    text = config_map["data"]["config.yaml"].rstrip("\n")
    assert annotations["checksum/gepa-sidecar-config"] == hashlib.sha256(text.encode()).hexdigest()
    assert yaml.safe_load(text)["prompts"][0]["name"] == "customer-care"


def test_no_subpath_mounts(found: list[Manifest]) -> None:
    keys = {key for manifest in found for key, _ in walk(manifest.body)}
    assert "mountPath" in keys
    assert not keys & {"subPath", "subPathExpr"}


def test_the_parents_values_are_checked_by_the_subcharts_rules(example: Example) -> None:
    _, loaded = example
    missing = render_error({"gepa-sidecar": {"kafka": {"bootstrapServers": ""}}}, loaded)
    assert "gepa-sidecar: kafka.bootstrapServers is required" in missing
    assert "\n" not in missing.strip()
    unknown = render_error({"gepa-sidecar": {"kafka": {"bootstrapServer": "k:9092"}}}, loaded)
    assert "at '/kafka': additional properties 'bootstrapServer' not allowed" in unknown


def test_embedded_mode_alone_renders_config_and_monitoring_for_the_users_pods() -> None:
    found = render(value_set("embedded"))
    (monitor,) = of_kind(found, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "chatbot"}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "gepa-http"
    assert of_kind(found, "Deployment") == []
