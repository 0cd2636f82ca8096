"""The chart rendered by Helm's own engine for its realistic value sets (helm/gepa-sidecar/ci/):
every object valid for Kubernetes, and the sidecar's contract held in every one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.settings import load_prompts_config, load_settings
from tests.deploy.chart_support import (
    CRD_SCHEMAS,
    KUBERNETES_VERSIONS,
    REQUIRED,
    ROOT,
    SECRET_KEYS,
    VALUE_SET_NAMES,
    Manifest,
    assert_real_settings,
    assert_sidecar_contract,
    of_kind,
    plain_env,
    pod_spec,
    render,
    sidecar_container,
    validate_manifest,
    value_set,
    walk,
)

STANDALONE_KINDS = {"ConfigMap", "Deployment", "Service", "ServiceAccount"}


Standalone = tuple[dict[str, Any], list[Manifest], dict[str, Any]]
STANDALONE_SETS = [n for n in VALUE_SET_NAMES if value_set(n).get("mode") != "embedded"]


@pytest.fixture(scope="module", params=VALUE_SET_NAMES)
def rendered(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[Manifest]]:
    values = value_set(request.param)
    return request.param, values, render(values)


@pytest.fixture(scope="module", params=STANDALONE_SETS)
def standalone(request: pytest.FixtureRequest) -> Standalone:
    """A standalone value set, its manifests, and the pod spec of its one Deployment."""
    values = value_set(request.param)
    found = render(values)
    (deployment,) = of_kind(found, "Deployment")
    return values, found, pod_spec(deployment)


def test_the_value_sets_cover_the_ways_users_run_it() -> None:
    assert set(VALUE_SET_NAMES) >= {"default", "production", "replicated", "embedded"}
    assert value_set("default") == REQUIRED


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes(
    rendered: tuple[str, dict[str, Any], list[Manifest]], version: str
) -> None:
    _, _, found = rendered
    assert found
    for manifest in found:
        assert manifest.body["metadata"]["namespace"] == "support", manifest.source
        validate_manifest(manifest.body, version)


def test_what_each_value_set_renders() -> None:
    kinds = {name: sorted(m.kind for m in render(value_set(name))) for name in VALUE_SET_NAMES}
    assert kinds["default"] == sorted(STANDALONE_KINDS)
    assert kinds["production"] == sorted(
        STANDALONE_KINDS
        | {"NetworkPolicy", "PodDisruptionBudget", "PrometheusRule", "ServiceMonitor"}
    )
    assert kinds["replicated"] == sorted(STANDALONE_KINDS | {"PodDisruptionBudget", "PodMonitor"})
    assert kinds["embedded"] == ["ConfigMap", "PodMonitor", "PrometheusRule"]


def test_the_crd_kinds_are_checked_against_their_schema_and_a_typo_fails() -> None:
    found = render(value_set("production")) + render(value_set("replicated"))
    checked = {(m.body["apiVersion"], m.kind) for m in found} & set(CRD_SCHEMAS)
    assert checked == set(CRD_SCHEMAS)
    (monitor,) = of_kind(found, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(Exception, match="intervall"):
        validate_manifest(monitor, KUBERNETES_VERSIONS[0])


def test_a_typo_in_a_built_in_kind_fails_strict_validation() -> None:
    (deployment,) = of_kind(render(value_set("default")), "Deployment")
    sidecar_container(pod_spec(deployment))["readOnlyRootFs"] = True
    with pytest.raises(Exception, match="readOnlyRootFs"):
        validate_manifest(deployment, KUBERNETES_VERSIONS[0])


def test_every_sidecar_setting_is_a_real_setting(standalone: Standalone) -> None:
    _, _, spec = standalone
    assert_real_settings(sidecar_container(spec))


def test_no_subpath_mounts_anywhere(rendered: tuple[str, dict[str, Any], list[Manifest]]) -> None:
    _, _, found = rendered
    keys = {key for manifest in found for key, _ in walk(manifest.body)}
    assert "mountPath" in keys or not of_kind(found, "Deployment")
    assert not keys & {"subPath", "subPathExpr"}


def test_the_pod_holds_the_sidecar_contract(standalone: Standalone) -> None:
    values, _, spec = standalone
    grace = values.get("shutdownGraceSeconds", 20)
    assert_sidecar_contract(spec, grace)
    assert spec["terminationGracePeriodSeconds"] == grace + 10
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert "restartPolicy" not in sidecar_container(spec)


SECRET_URL = "postgresql+psycopg://gepa:from-the-secret@postgres.chat:5432/gepa"


def test_the_settings_accept_what_the_chart_renders(
    standalone: Standalone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The env and the ConfigMap's config.yaml, given to the sidecar's own settings loader
    (the paths inside the container mapped to files here)."""
    values, found, spec = standalone
    (config_map,) = of_kind(found, "ConfigMap")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
    config = load_prompts_config(config_file)
    assert [p.name for p in config.prompts] == [p["name"] for p in values.get("prompts", [])]
    container = sidecar_container(spec)
    env = plain_env(container)
    env["SIDECAR_CONFIG_FILE"] = str(config_file)
    for each in container["env"]:  # what the Secret holds, as the kubelet would give it
        if "secretKeyRef" in each.get("valueFrom", {}):
            key = each["valueFrom"]["secretKeyRef"]["key"]
            env[each["name"]] = SECRET_URL if key == "DATABASE_URL" else f"from-the-secret-{key}"
    if "SIDECAR_KAFKA_SSL_CAFILE" in env:
        (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
        env["SIDECAR_KAFKA_SSL_CAFILE"] = str(tmp_path / "ca.crt")
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == values["kafka"]["bootstrapServers"]
    assert settings.judge_model == values["models"]["judge"]
    assert settings.publish_dir == Path("/var/run/gepa-sidecar/prompts")
    assert settings.shutdown_grace_s == values.get("shutdownGraceSeconds", 20)
    assert settings.http_port == 8791
    judging = {"budgetUsdPerHour": None, "maxPerMinute": None, **values.get("judging", {})}
    assert settings.judge_budget_usd_per_hour == judging["budgetUsdPerHour"]
    assert settings.judge_max_per_minute == judging["maxPerMinute"]
    assert settings.judge_max_event_age_hours == judging.get("maxEventAgeHours", 168)


def test_selectors_find_the_pods(standalone: Standalone) -> None:
    _, found, _ = standalone
    (deployment,) = of_kind(found, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [deployment["spec"]["selector"]["matchLabels"]]
    selectors += [each["spec"]["selector"] for each in of_kind(found, "Service")]
    for kind in ("PodMonitor", "PodDisruptionBudget"):
        selectors += [each["spec"]["selector"]["matchLabels"] for each in of_kind(found, kind)]
    for policy in of_kind(found, "NetworkPolicy"):
        selectors.append(policy["spec"]["podSelector"]["matchLabels"])
    assert len(selectors) >= 2
    for selector in selectors:
        assert selector.items() <= labels.items()
    (service,) = of_kind(found, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    for monitor in of_kind(found, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_production_reads_its_secrets_and_database_from_secrets() -> None:
    values = value_set("production")
    (deployment,) = of_kind(render(values), "Deployment")
    container = sidecar_container(pod_spec(deployment))
    read = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    refs = {name: how["secretKeyRef"] for name, how in read.items() if "secretKeyRef" in how}
    assert read["SIDECAR_SHADOW_MIN_PAIRS"]["configMapKeyRef"]["name"] == "gepa-tuning"
    for key in SECRET_KEYS:
        assert refs[f"SIDECAR_{key}"] == {"name": "gepa-sidecar", "key": key, "optional": True}
    assert refs["SIDECAR_DATABASE_URL"] == {"name": "gepa-sidecar-db", "key": "DATABASE_URL"}
    env = plain_env(container)
    assert "SIDECAR_DATABASE_URL" not in env
    assert env["SIDECAR_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["SIDECAR_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["SIDECAR_KAFKA_SSL_CAFILE"] == "/etc/gepa-sidecar-kafka-ca/ca.crt"
    assert env["SIDECAR_JUDGE_CONCURRENCY"] == "16"
    (ca,) = [v for v in pod_spec(deployment)["volumes"] if "secret" in v]
    assert ca["secret"]["secretName"] == "kafka-ca"
    assert ca["secret"]["items"] == [{"key": "ca.pem", "path": "ca.crt"}]


def test_the_defaults_keep_sqlite_in_the_data_dir_and_secrets_unset() -> None:
    (deployment,) = of_kind(render(value_set("default")), "Deployment")
    container = sidecar_container(pod_spec(deployment))
    assert all("valueFrom" not in e for e in container["env"])
    env = plain_env(container)
    assert env["SIDECAR_DATABASE_URL"] == "sqlite:////var/lib/gepa-sidecar/sidecar.db"
    assert env["SIDECAR_KAFKA_AUTO_OFFSET_RESET"] == "latest"
    assert env["SIDECAR_LOG_FORMAT"] == "json"
    assert env["SIDECAR_PUBLISH_TARGETS"] == "file,kafka,http"
    assert not {"SIDECAR_TASK_MODEL", "SIDECAR_KAFKA_SASL_MECHANISM"} & env.keys()


def test_two_replicas_share_postgresql() -> None:
    (deployment,) = of_kind(render(value_set("replicated")), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    env = plain_env(sidecar_container(pod_spec(deployment)))
    assert env["SIDECAR_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["SIDECAR_JUDGE_API_BASE"] == "http://vllm.models.svc:8000/v1"


def test_the_network_policy_opens_only_the_http_port() -> None:
    (policy,) = of_kind(render(value_set("production")), "NetworkPolicy")
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert len(ingress["from"]) == 2
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns = policy["spec"]["egress"][-1]
    assert {p["port"] for p in dns["ports"]} == {53}


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        (deployment,) = of_kind(render(values), "Deployment")
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/gepa-sidecar-config"])

    values = value_set("production")
    changed = yaml.safe_load(yaml.safe_dump(values))
    changed["prompts"][0]["seed"]["system_prompt"] = "You are terse."
    assert checksum(values) != checksum(changed)


def test_the_rules_the_chart_ships_are_the_projects_rules() -> None:
    shipped = (ROOT / "helm" / "gepa-sidecar" / "files" / "rules.yaml").read_bytes()
    assert shipped == (ROOT / "deploy" / "prometheus" / "rules.yaml").read_bytes()
    (rule,) = of_kind(render(value_set("production")), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(shipped)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
