"""deploy/k8s: every manifest validates strictly against Kubernetes' own schemas (1.29, the first
release with native sidecars on by default, and the newest that kubernetes-validate bundles),
and the pod keeps the promises the sidecar relies on: a native sidecar, a shared prompts
emptyDir read-only in the chatbot, no subPath, a grace period above SHUTDOWN_GRACE_S, settings
and secret keys that exist, and a prompts config the sidecar loads."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate
from pydantic import SecretStr

from sidecar.settings import ENV_PREFIX, Settings, load_prompts_config, load_settings
from tests.deploy.chart_support import walk

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
OLDEST = "1.29.0"  # native sidecars (initContainers with restartPolicy: Always) on by default
KUBERNETES_VERSIONS = (OLDEST, kubernetes_validate.latest_version())
CUSTOM_RESOURCE_SCHEMAS = {
    # kubernetes-validate holds the built-in kinds only and passes an unknown kind with a
    # warning, so a custom resource is checked against a schema of its CRD's fields we use.
    ("monitoring.coreos.com/v1", "PodMonitor"): Path(__file__).parent
    / "schemas"
    / "podmonitor-monitoring-v1.json",
}
SHIPPED = {
    "chatbot-deployment.yaml",
    "configmap.yaml",
    "secret.example.yaml",
    "service.yaml",
    "podmonitor.yaml",
}
SIDECAR = "gepa-sidecar"
IMAGE = "ghcr.io/gepa-sidecar/gepa-sidecar"
IMAGE_USER = 10001
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
SECRET_SETTINGS = sorted(
    name
    for name, info in Settings.model_fields.items()
    if SecretStr in (info.annotation, *getattr(info.annotation, "__args__", ()))
)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


MANIFESTS = sorted(K8S.glob("*.yaml"))
RESOURCES = [(path.name, doc) for path in MANIFESTS for doc in documents(path)]


def resource(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for _, doc in RESOURCES if doc["kind"] == kind]
    found = [doc for doc in found if name is None or doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


DEPLOYMENT = resource("Deployment")
POD = DEPLOYMENT["spec"]["template"]
SPEC = POD["spec"]
ENV_MAP: dict[str, str] = resource("ConfigMap", "gepa-sidecar-env")["data"]
SIDECAR_CONTAINER = next(c for c in SPEC["initContainers"] if c["name"] == SIDECAR)
CHATBOT = next(c for c in SPEC["containers"] if c["name"] == "chatbot")
CONTAINERS = [SIDECAR_CONTAINER, CHATBOT]


def check(doc: dict[str, Any], version: str) -> None:
    """Raises jsonschema.ValidationError unless `doc` validates, unknown fields refused."""
    schema = CUSTOM_RESOURCE_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is None:
        kubernetes_validate.validate(doc, version, strict=True)
    else:
        jsonschema.Draft202012Validator(json.loads(schema.read_text())).validate(doc)


def env_value(container: dict[str, Any], name: str) -> dict[str, Any]:
    return next(entry for entry in container["env"] if entry["name"] == name)


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's mounts by mount path."""
    return {mount["mountPath"]: mount for mount in container["volumeMounts"]}


VOLUMES = {volume["name"]: volume for volume in SPEC["volumes"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("name", "doc"),
    RESOURCES,
    ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in RESOURCES],
)
def test_every_manifest_validates_strictly(name: str, doc: dict[str, Any], version: str) -> None:
    check(doc, version)


def test_the_validator_cli_passes_the_built_in_kinds_and_does_not_know_the_podmonitor() -> None:
    """`kubernetes-validate --strict` as an operator runs it; it only warns on a PodMonitor,
    which is why the test above brings a schema for it."""
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", OLDEST]
    result = subprocess.run([*command, *map(str, MANIFESTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    unvalidated = [line for line in result.stdout.splitlines() if not line.startswith("INFO")]
    assert len(unvalidated) == len(CUSTOM_RESOURCE_SCHEMAS) == 1
    assert "Couldn't find schema for kind PodMonitor" in unvalidated[0]


@pytest.mark.parametrize(
    ("kind", "where"),
    [("Deployment", ("spec", "template", "spec", "initContainers", 0)), ("PodMonitor", ("spec",))],
)
def test_a_misspelt_field_is_refused(kind: str, where: tuple[str | int, ...]) -> None:
    """Guards the validation above against passing anything."""
    doc = copy.deepcopy(resource(kind))
    node: Any = doc
    for step in where:
        node = node[step]
    node["restartPolicyy"] = "Always"
    with pytest.raises(jsonschema.ValidationError):
        check(doc, OLDEST)


def test_the_shipped_files_are_the_ones_the_readme_lists() -> None:
    assert {path.name for path in MANIFESTS} == SHIPPED
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    assert [name for name in sorted(SHIPPED) if f"`{name}`" not in readme] == []


def test_the_sidecar_is_a_native_sidecar_of_the_chatbot_pod() -> None:
    assert [c["name"] for c in SPEC["initContainers"]] == [SIDECAR]
    assert SIDECAR_CONTAINER["restartPolicy"] == "Always"
    assert SIDECAR not in [c["name"] for c in SPEC["containers"]]
    assert SIDECAR_CONTAINER["image"] == f"{IMAGE}:{VERSION}"
    assert SIDECAR_CONTAINER["args"] == ["run"]


def test_the_prompts_emptydir_is_shared_and_read_only_in_the_chatbot() -> None:
    written = mounts(SIDECAR_CONTAINER)[ENV_MAP["SIDECAR_PUBLISH_DIR"]]
    assert not written.get("readOnly", False)
    assert set(VOLUMES[written["name"]]) == {"name", "emptyDir"}
    source = Path(env_value(CHATBOT, "PROMPT_SOURCE")["value"].removeprefix("file://"))
    read = mounts(CHATBOT)[str(source.parent)]
    assert read == {"name": written["name"], "mountPath": str(source.parent), "readOnly": True}


def test_no_subpath_anywhere() -> None:
    """A subPath mount never sees an update: the prompt would never hot-reload."""
    keys = {key for _, doc in RESOURCES for key, _ in walk(doc)}
    assert not keys & {"subPath", "subPathExpr"}


def test_the_grace_period_outlasts_the_sidecars_bounded_stop() -> None:
    configured = ENV_MAP.get("SIDECAR_SHUTDOWN_GRACE_S")
    grace = float(configured or Settings.model_fields["shutdown_grace_s"].default)
    assert SPEC["terminationGracePeriodSeconds"] > grace
    assert SPEC["terminationGracePeriodSeconds"] == grace + 10


def test_every_sidecar_setting_named_is_a_real_setting() -> None:
    named = set(ENV_MAP) | {
        entry["name"] for container in CONTAINERS for entry in container.get("env", [])
    }
    settings = {name for name in named if name.startswith(ENV_PREFIX)}
    assert len(settings) > 10
    unknown = [
        n for n in settings if n.removeprefix(ENV_PREFIX).lower() not in Settings.model_fields
    ]
    assert unknown == []


def test_the_configmaps_settings_and_prompts_load(tmp_path: Path) -> None:
    config = tmp_path / Path(ENV_MAP["SIDECAR_CONFIG_FILE"]).name
    config_map = resource("ConfigMap", "gepa-sidecar-config")
    config.write_text(config_map["data"][config.name], encoding="utf-8")
    values = {name.removeprefix(ENV_PREFIX).lower(): value for name, value in ENV_MAP.items()}
    settings = load_settings(**{**values, "config_file": config})
    prompts = load_prompts_config(settings.config_file)
    assert [prompt.judge.metric for prompt in prompts.prompts if prompt.judge] == [None]
    source = env_value(CHATBOT, "PROMPT_SOURCE")["value"]
    assert source.rsplit("/", 1)[1] in {f"{prompt.name}.json" for prompt in prompts.prompts}
    mounted = mounts(SIDECAR_CONTAINER)[str(Path(ENV_MAP["SIDECAR_CONFIG_FILE"]).parent)]
    assert mounted["readOnly"] is True
    assert VOLUMES[mounted["name"]]["configMap"] == {"name": config_map["metadata"]["name"]}
    if settings.database_url.startswith("sqlite"):
        assert DEPLOYMENT["spec"]["replicas"] == 1, "SQLite on an emptyDir is one replica's"


def test_secrets_come_from_optional_keys_named_like_the_settings() -> None:
    secret = resource("Secret")
    references = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for container in CONTAINERS
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert {f"{ENV_PREFIX}{name.upper()}" for name in SECRET_SETTINGS} <= set(references)
    for env_name, reference in references.items():
        assert reference["optional"] is True, env_name
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] == env_name.removeprefix(ENV_PREFIX)
        # a key for a setting that is off by default stands commented out, ready to fill in
        written = (K8S / "secret.example.yaml").read_text(encoding="utf-8")
        assert reference["key"] in secret["stringData"] or f"# {reference['key']}: " in written
    assert not [name for name in ENV_MAP if name in references], "a secret in the ConfigMap"


def test_config_map_references_name_what_the_configmaps_hold() -> None:
    held = {
        doc["metadata"]["name"]: doc["data"] for _, doc in RESOURCES if doc["kind"] == "ConfigMap"
    }
    for container in CONTAINERS:
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in held
        for entry in container.get("env", []):
            reference = entry.get("valueFrom", {}).get("configMapKeyRef")
            if reference is not None:
                assert reference["key"] in held[reference["name"]], entry["name"]


def test_probes_ask_readyz_and_healthz_on_the_http_port() -> None:
    ports = {port["name"]: port["containerPort"] for port in SIDECAR_CONTAINER["ports"]}
    default = Settings.model_fields["http_port"].default
    assert ports == {"http": default} and ENV_MAP["SIDECAR_HTTP_PORT"] == str(default)
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        assert SIDECAR_CONTAINER[probe]["httpGet"] == {"path": path, "port": "http"}, probe


@pytest.mark.parametrize("container", CONTAINERS, ids=lambda c: c["name"])
def test_each_container_is_locked_down_with_resources(container: dict[str, Any]) -> None:
    context = {**SPEC.get("securityContext", {}), **container["securityContext"]}
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind
    assert "emptyDir" in VOLUMES[mounts(container)["/tmp"]["name"]]


def test_the_sidecar_runs_as_the_images_user_and_writes_only_to_emptydirs() -> None:
    context = SIDECAR_CONTAINER["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (IMAGE_USER, IMAGE_USER)
    writable = [m for m in SIDECAR_CONTAINER["volumeMounts"] if not m.get("readOnly", False)]
    assert all("emptyDir" in VOLUMES[mount["name"]] for mount in writable)
    database = ENV_MAP["SIDECAR_DATABASE_URL"].removeprefix("sqlite:///")
    assert str(Path(database).parent) in {mount["mountPath"] for mount in writable}


def test_services_and_the_podmonitor_reach_named_ports_of_the_pod() -> None:
    labels = POD["metadata"]["labels"]
    port_names = {port["name"]: c["name"] for c in CONTAINERS for port in c["ports"]}
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for service in (doc for _, doc in RESOURCES if doc["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        assert all(port["targetPort"] in port_names for port in service["spec"]["ports"])
    monitor = resource("PodMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    endpoints = [(e["port"], e["path"]) for e in monitor["podMetricsEndpoints"]]
    assert endpoints == [("http", "/metrics")]
    assert port_names["http"] == SIDECAR
