"""What the chart refuses: values.schema.json (unknown keys at every level, wrong types), checked
by Helm itself and by check-jsonschema; the combinations only a template can judge, each a
one-line error; and `helm lint --strict`."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.deploy.chart_support import (
    CHART_DIR,
    REQUIRED,
    VALUE_SET_NAMES,
    VALUE_SETS_DIR,
    chart,
    render_error,
    value_set,
)

SCHEMA_FILE = CHART_DIR / "values.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")

_SELECTOR = {
    "matchLabels": {"team": "chat"},
    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}],
}
_KEYS = [{"key": "tls.crt", "path": "tls.crt", "mode": 0o440}]
EVERY_OBJECT: dict[str, Any] = {
    **value_set("production"),
    "image": {"repository": "registry.example.com/gepa", "tag": "0.1.0", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "database": {"url": "", "existingSecret": {"name": "db", "key": "URL"}},
    "securityContext": {"runAsUser": 20000, "runAsGroup": 20000, "fsGroup": 20000},
    "probes": {
        "startup": {"periodSeconds": 5, "failureThreshold": 30},
        "readiness": {"periodSeconds": 5, "failureThreshold": 3},
        "liveness": {"periodSeconds": 5, "failureThreshold": 3},
        "timeoutSeconds": 2,
    },
    "volumeSizeLimits": {"tmp": "32Mi", "data": "2Gi", "prompts": "8Mi"},
    "judging": {"budgetUsdPerHour": 2.5, "maxPerMinute": 300, "maxEventAgeHours": 24},
    "extraEnv": [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "C", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
        {"name": "D", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
    ],
    "extraVolumes": [
        {"name": "tls", "secret": {"secretName": "tls", "items": _KEYS}},
        {"name": "more", "configMap": {"name": "more", "items": _KEYS}},
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ],
    "extraVolumeMounts": [{"name": "tls", "mountPath": "/etc/tls", "readOnly": True}],
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"namespaceSelector": _SELECTOR, "podSelector": _SELECTOR}],
        "egress": [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
             "ports": [{"port": 9092, "protocol": "TCP", "endPort": 9094}]},
        ],
        "allowDNS": False,
    },
    "metrics": {
        "podMonitor": {"enabled": True, "labels": {}, "interval": "1m", "scrapeTimeout": "5s",
                       "podSelector": {"app": "chatbot"}},
        "serviceMonitor": {"enabled": False, "labels": {}, "interval": "1m", "scrapeTimeout": "5s"},
        "prometheusRule": {"enabled": True, "labels": {}},
    },
}  # fmt: skip
"""Values that reach every object the schema declares (schema-valid; not a sensible install)."""


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _strict_objects(node: Any) -> Iterator[int]:
    """The id of every object schema in the file that rejects unknown keys."""
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            yield id(node)
        for value in node.values():
            yield from _strict_objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strict_objects(item)


def _reached(schema: dict[str, Any], instance: Any, path: str) -> Iterator[tuple[str, int]]:
    """(JSON pointer into the values, id of its schema) for every strict object the values reach."""
    schema = _resolve(schema)
    if isinstance(instance, dict) and schema.get("additionalProperties") is False:
        yield path, id(schema)
        for key, value in instance.items():
            yield from _reached(schema["properties"][key], value, f"{path}/{key}")
    elif isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            yield from _reached(schema["items"], item, f"{path}/{index}")


REACHED = list(_reached(SCHEMA, EVERY_OBJECT, ""))


def _at(values: dict[str, Any], pointer: str) -> Any:
    node: Any = values
    for part in pointer.strip("/").split("/") if pointer else []:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`base` (the required values) with `value` set at the dotted `path`."""
    values = copy.deepcopy(REQUIRED if base is None else base)
    *parents, leaf = path.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return values


def test_every_object_in_the_schema_rejects_unknown_keys() -> None:
    declared = set(_strict_objects(SCHEMA))
    assert declared == {schema_id for _, schema_id in REACHED}
    assert len(REACHED) > 40


def test_the_values_that_reach_every_object_are_valid() -> None:
    chart().validate_schema(EVERY_OBJECT)


@pytest.mark.parametrize("pointer", sorted({pointer for pointer, _ in REACHED}))
def test_helm_names_an_unknown_key(pointer: str) -> None:
    values = copy.deepcopy(EVERY_OBJECT)
    _at(values, pointer)["unexpectedKey"] = "x"
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart().validate_schema(values)
    assert f"at '{pointer}'" in str(caught.value)
    assert "'unexpectedKey' not allowed" in str(caught.value)


WRONG = [
    ("replicaCount", "two", "want integer"),
    ("replicaCount", 1.5, "want integer"),
    ("mode", "sidecar", "value must be one of"),
    ("sampleRate", 2, "maximum"),
    ("judging.budgetUsdPerHour", 0, "exclusiveMinimum"),
    ("judging.maxPerMinute", 1.5, "want null or integer"),
    ("judging.maxEventAgeHours", "a day", "want number"),
    ("httpPort", 80, "minimum"),
    ("portName", "http_port", "does not match pattern"),
    ("shutdownGraceSeconds", 0, "minimum"),
    ("shutdownGraceSeconds", 3601, "maximum"),
    ("shutdownGraceSeconds", "20s", "want integer"),
    ("kafka.securityProtocol", "TLS", "value must be one of"),
    ("kafka.bootstrapServers", "kafka:9092, kafka2:9092", "does not match pattern"),
    ("kafka.autoOffsetReset", "beginning", "value must be one of"),
    ("database.url", "mysql://db/gepa", "does not match pattern"),
    ("optimize.schedule", "often", "does not match pattern"),
    ("optimize.schedule", 0, "minimum"),
    ("optimize.runMaxMetricCalls", 0, "minimum"),
    ("publish.targets", ["s3"], "value must be one of"),
    ("publish.targets", ["file", "file"], "are equal"),
    ("logging.level", "verbose", "value must be one of"),
    ("podAnnotations", {"team": 7}, "want string"),
    ("image.pullPolicy", "Sometimes", "value must be one of"),
    ("extraEnv", [{"name": "X", "value": 1}], "want string"),
    ("extraEnv", [{"name": "X", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "a"}}}],
     "not"),
    ("extraVolumeMounts", [{"name": "v", "mountPath": "/v", "subPath": "f"}],
     "'subPath' not allowed"),
    ("prompts", [{"name": "customer care", "seed": {"s": "x"}}], "does not match pattern"),
    ("prompts", [{"name": "p", "seed": {}}], "minProperties"),
    ("prompts", [{"name": "p", "seed": {"s": "x"}, "judge": {"examples": []}}], "anyOf"),
    ("podDisruptionBudget.maxUnavailable", "half", "anyOf"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "problem"), WRONG, ids=[w[0] for w in WRONG])
def test_helm_rejects_a_wrong_value_and_says_where(path: str, value: Any, problem: str) -> None:
    message = render_error(_with(path, value))
    assert "values don't meet the specifications of the schema" in message
    assert f"at '/{path.replace('.', '/')}" in message
    assert problem in message


def test_check_jsonschema_accepts_the_shipped_values(tmp_path: Path) -> None:
    every = tmp_path / "every-object-values.yaml"
    every.write_text(yaml.safe_dump(EVERY_OBJECT), encoding="utf-8")
    shipped = [CHART_DIR / "values.yaml", *sorted(VALUE_SETS_DIR.glob("*-values.yaml"))]
    result = _check_jsonschema(*shipped, every)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_check_jsonschema_rejects_unknown_keys_and_wrong_types(tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    values = _with("kafka.bootstarpServers", "kafka:9092", _with("replicaCount", "two"))
    bad.write_text(yaml.safe_dump(values), encoding="utf-8")
    result = _check_jsonschema(bad)
    assert result.returncode == 1
    assert "'bootstarpServers' was unexpected" in result.stdout
    assert "$.replicaCount: 'two' is not of type 'integer'" in result.stdout


def _check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    command = [str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA_FILE), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _replicated_on_sqlite() -> dict[str, Any]:
    return _with("replicaCount", 2)


BAD_COMBINATIONS = [
    ({}, "kafka.bootstrapServers is required"),
    ({"kafka": {"bootstrapServers": "kafka:9092"}}, "models.judge is required"),
    (_replicated_on_sqlite(), "replicaCount 2 needs PostgreSQL"),
    (_with("database.url", "sqlite:////data/x.db", _replicated_on_sqlite()),
     "replicaCount 2 needs PostgreSQL"),
    (_with("database", {"url": "postgresql://db/g", "existingSecret": {"name": "db"}}),
     "give database.url or database.existingSecret.name, not both"),
    (_with("kafka.securityProtocol", "SASL_SSL"),
     "kafka.securityProtocol SASL_SSL needs kafka.saslMechanism"),
    (_with("kafka.saslMechanism", "PLAIN"),
     "kafka.saslMechanism needs kafka.securityProtocol SASL_PLAINTEXT or SASL_SSL (it is "),
    (_with("kafka.caSecret", {"name": "ca"}), "kafka.caSecret needs kafka.securityProtocol SSL"),
    (_with("metrics.serviceMonitor", {"enabled": True}, _with("mode", "embedded")),
     "metrics.serviceMonitor needs mode standalone"),
    (_with("prompts", [{"name": "a", "seed": {"s": "x"}}, {"name": "a", "seed": {"s": "y"}}]),
     "prompts: the name a is given twice"),
    (_with("extraEnv", [{"name": "SIDECAR_HTTP_PORT", "value": "9000"}]),
     "extraEnv sets SIDECAR_HTTP_PORT, which the chart sets"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected"), BAD_COMBINATIONS, ids=[b[1][:40] for b in BAD_COMBINATIONS]
)
def test_a_bad_combination_stops_the_render_with_one_line(
    values: dict[str, Any], expected: str
) -> None:
    chart().validate_schema(values)
    message = render_error(values)
    assert f"gepa-sidecar: {expected}" in message
    assert "\n" not in message.strip()


def _lint(values: dict[str, Any]) -> dict[str, Any]:
    return helm_python.lint(CHART_DIR, values, strict=True, kube_version="v1.29.0")


@pytest.mark.parametrize("name", VALUE_SET_NAMES)
def test_lint_strict_passes(name: str) -> None:
    report = _lint(value_set(name))
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_strict_reports_a_bad_value() -> None:
    report = _lint(_with("kafka.bogus", 1))
    assert any("'bogus' not allowed" in error for error in report["errors"])


def _declared_keys(schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Dotted paths of every key the schema declares through nested objects."""
    for key, child in _resolve(schema).get("properties", {}).items():
        yield f"{path}{key}"
        yield from _declared_keys(child, f"{path}{key}.")


def test_values_yaml_holds_every_key_the_schema_declares() -> None:
    """So each is documented there; the optional members of Kubernetes' own types (resources,
    affinity) and Helm's `global` excepted."""
    defaults = chart().values
    missing = []
    for dotted in _declared_keys(SCHEMA):
        node: Any = defaults
        for part in dotted.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError:
            missing.append(dotted)
    optional = {"global", "resources.limits.cpu", "affinity.nodeAffinity", "affinity.podAffinity"}
    optional |= {"affinity.podAntiAffinity"}
    optional |= {f"resources.{kind}.ephemeral-storage" for kind in ("requests", "limits")}
    assert sorted(missing) == sorted(optional)


def test_every_value_in_values_yaml_has_a_comment() -> None:
    """A key is documented by the comment right above it; a section (a key whose children are
    keys) by its children's comments."""
    lines = [line for line in (CHART_DIR / "values.yaml").read_text().splitlines() if line.strip()]
    undocumented = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("#", "- ")) or ":" not in stripped:
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        indent = len(line) - len(line.lstrip())
        is_section = stripped.endswith(":") and (
            len(following) - len(following.lstrip()) > indent
            and not following.strip().startswith("- ")
        )
        if not is_section and not lines[index - 1].strip().startswith("#"):
            undocumented.append(stripped)
    assert undocumented == []
