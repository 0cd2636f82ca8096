"""The Helm chart as the tests see it: rendered by Helm's own engine (helm_python, Helm v4's Go
SDK), parsed into manifests, and checked against Kubernetes' schemas. Shared by test_chart*.py."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "gepa-sidecar"
EXAMPLE_DIR = ROOT / "helm" / "examples" / "chatbot"
VALUE_SETS_DIR = CHART_DIR / "ci"
RELEASE = "shop"
NAMESPACE = "support"
CONTAINER = "gepa-sidecar"
PROMPTS_DIR = "/var/run/gepa-sidecar/prompts"
SECRET_KEYS = (
    "ADMIN_TOKEN",
    "JUDGE_API_KEY",
    "TASK_API_KEY",
    "REFLECTION_API_KEY",
    "KAFKA_SASL_PASSWORD",
)
"""The keys of `existingSecret`, named like the settings they fill."""

KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
"""The chart's floor (kubeVersion >=1.29: native sidecars on by default) and the newest
Kubernetes whose schemas kubernetes-validate bundles."""

REQUIRED = {"kafka": {"bootstrapServers": "kafka:9092"}, "models": {"judge": "openai/gpt-4o-mini"}}
"""The two values without a usable default (the chart stops without them)."""


@dataclass(frozen=True)
class Manifest:
    """One rendered Kubernetes object and the template it came from."""

    source: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])


@functools.cache
def chart() -> helm_python.Chart:
    """The chart, loaded once (a loaded chart is immutable)."""
    return helm_python.Chart.load(CHART_DIR)


def value_set(name: str) -> dict[str, Any]:
    """One of the realistic value sets shipped in helm/gepa-sidecar/ci/<name>-values.yaml."""
    loaded = yaml.safe_load((VALUE_SETS_DIR / f"{name}-values.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


VALUE_SET_NAMES = tuple(
    sorted(path.name.removesuffix("-values.yaml") for path in VALUE_SETS_DIR.glob("*-values.yaml"))
)


def render_files(values: dict[str, Any], loaded: helm_python.Chart | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` gives it."""
    return (loaded or chart()).render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(files: dict[str, str]) -> list[Manifest]:
    """Every object in the rendered files (NOTES.txt is text, not a manifest)."""
    found = []
    for source, text in sorted(files.items()):
        if source.endswith("NOTES.txt"):
            continue
        found.extend(Manifest(source, body) for body in yaml.safe_load_all(text) if body)
    return found


def render(values: dict[str, Any]) -> list[Manifest]:
    return manifests(render_files(values))


def render_error(values: dict[str, Any], loaded: helm_python.Chart | None = None) -> str:
    """The message Helm stops with for `values` (the test fails if it renders)."""
    try:
        render_files(values, loaded)
    except (helm_python.HelmRenderError, helm_python.HelmValuesError) as exc:
        return str(exc)
    raise AssertionError(f"rendered without an error: {values}")


def of_kind(found: list[Manifest], kind: str) -> list[dict[str, Any]]:
    return [manifest.body for manifest in found if manifest.kind == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def sidecar_container(spec: dict[str, Any]) -> dict[str, Any]:
    """The gepa-sidecar container of a pod spec, whether a container or a native sidecar."""
    every = spec.get("containers", []) + spec.get("initContainers", [])
    (container,) = [each for each in every if each["name"] == CONTAINER]
    return container


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's env vars that carry a value (not those read from a Secret)."""
    return {each["name"]: each["value"] for each in container["env"] if "value" in each}


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def validate_manifest(body: dict[str, Any], version: str) -> None:
    """Kubernetes' own schema (strict: unknown fields fail) for built-in kinds; for the
    Prometheus Operator's kinds, the schema of the fields the chart uses (below)."""
    crd_schema = CRD_SCHEMAS.get((body["apiVersion"], body["kind"]))
    if crd_schema is None:
        kubernetes_validate.validate(body, version, strict=True)
    else:
        jsonschema.Draft7Validator(crd_schema).validate(body)


def _strict(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        schema["required"] = required
    return schema


_STRING = {"type": "string", "minLength": 1}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
_METADATA = _strict(
    {"name": _STRING, "namespace": _STRING, "labels": _STRING_MAP, "annotations": _STRING_MAP},
    ["name", "namespace"],
)
_ENDPOINT = _strict(
    {"port": _STRING, "path": _STRING, "interval": _DURATION, "scrapeTimeout": _DURATION},
    ["port"],
)
_SELECTOR = _strict({"matchLabels": {**_STRING_MAP, "minProperties": 1}}, ["matchLabels"])
_RULE = _strict(
    {
        "record": _STRING,
        "alert": _STRING,
        "expr": _STRING,
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
    ["expr"],
)
_RULE["oneOf"] = [{"required": ["record"]}, {"required": ["alert"]}]


def _crd(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _strict(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "PodMonitor"): _crd(
        "PodMonitor",
        _strict(
            {"selector": _SELECTOR, "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT}},
            ["selector", "podMetricsEndpoints"],
        ),
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _crd(
        "ServiceMonitor",
        _strict(
            {"selector": _SELECTOR, "endpoints": {"type": "array", "items": _ENDPOINT}},
            ["selector", "endpoints"],
        ),
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _crd(
        "PrometheusRule",
        _strict(
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "name": _STRING,
                            "interval": _DURATION,
                            "rules": {"type": "array", "minItems": 1, "items": _RULE},
                        },
                        ["name", "rules"],
                    ),
                }
            },
            ["groups"],
        ),
    ),
}
"""The fields of monitoring.coreos.com/v1 (prometheus-operator's CRDs) that the chart renders,
as that CRD's openAPIV3Schema types them; an unknown field fails, as `--strict` does for the
built-in kinds. The CRDs themselves are not bundled with kubernetes-validate."""


def assert_sidecar_contract(spec: dict[str, Any], grace: int, port_name: str = "http") -> None:
    """What every pod running gepa-sidecar must hold, standalone or embedded: the stop budget,
    a non-root user on a read-only root with only emptyDirs writable, the probes of DESIGN.md
    "Readiness", and the prompts config mounted as a directory."""
    container = sidecar_container(spec)
    env = plain_env(container)
    assert env["SIDECAR_SHUTDOWN_GRACE_S"] == str(grace)
    assert spec["terminationGracePeriodSeconds"] >= grace + 10
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001 and context["runAsGroup"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    mounts = container["volumeMounts"]
    writable = {m["name"]: m["mountPath"] for m in mounts if not m.get("readOnly")}
    assert sorted(writable.values()) == ["/tmp", "/var/lib/gepa-sidecar", PROMPTS_DIR]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert all("emptyDir" in volumes[name] for name in writable)
    (config,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/gepa-sidecar"]
    assert config["readOnly"] is True and "configMap" in volumes[config["name"]]
    assert env["SIDECAR_CONFIG_FILE"] == "/etc/gepa-sidecar/config.yaml"
    assert env["SIDECAR_PUBLISH_DIR"] == PROMPTS_DIR
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == (port_name, 8791)
    assert env["SIDECAR_HTTP_PORT"] == "8791"
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": port_name}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port_name}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port_name}
    assert container["args"] == ["run"]


def assert_real_settings(container: dict[str, Any]) -> None:
    """Every SIDECAR_* variable names a field of sidecar.settings.Settings, once."""
    from sidecar.settings import Settings

    names = [each["name"] for each in container["env"]]
    assert len(names) == len(set(names)), names
    settings = [name for name in names if name.startswith("SIDECAR_")]
    assert len(settings) > 10
    fields = Settings.model_fields
    assert [n for n in settings if n.removeprefix("SIDECAR_").lower() not in fields] == []
