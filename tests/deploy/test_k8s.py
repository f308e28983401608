"""Kubernetes manifests: schema-valid (offline schemas of kubernetes-validate) and consistent."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.manifests import DEPLOY, K8S, documents, setting_env_names

K8S_VERSION = "1.30"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _all() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in documents(path)]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in _all() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_schema_valid(path: Path) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"].get("namespace", "switchboard") == "switchboard"


def test_the_validator_rejects_mistakes() -> None:
    worker = _one("Deployment", "switchboard-worker")
    typo = copy.deepcopy(worker)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    wrong_type = copy.deepcopy(worker)
    wrong_type["spec"]["replicas"] = "two"
    for bad in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = documents(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("switchboard-ingress", ["serve", "--host", "0.0.0.0", "--workers", "0"]),
        ("switchboard-worker", ["worker"]),
    ],
)
def test_deployments_probe_run_unprivileged_and_read_settings(name: str, args: list[str]) -> None:
    deployment = _one("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["args"] == args
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert sources == {"switchboard-config", "switchboard-secrets"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts  # writable places on a read-only root
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"


def test_migrations_run_before_the_ingress_starts() -> None:
    pod = _one("Deployment", "switchboard-ingress")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"] == ["db", "upgrade"]


def test_services_select_their_pods() -> None:
    for component in ("ingress", "worker"):
        service = _one("Service", f"switchboard-{component}")
        pods = _one("Deployment", f"switchboard-{component}")["spec"]["template"]["metadata"]
        assert service["spec"]["selector"].items() <= pods["labels"].items()
        assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_worker_autoscaler_follows_lane_depth() -> None:
    hpa = _one("HorizontalPodAutoscaler", "switchboard-worker")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "switchboard-worker",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "switchboard_lane_depth"
    assert hpa["spec"]["minReplicas"] >= 2
    # The Prometheus adapter serves that external metric under the same name.
    adapter = documents(DEPLOY / "prometheus" / "adapter-values.yaml")[0]
    served = {rule["name"]["as"] for rule in adapter["rules"]["external"]}
    assert "switchboard_lane_depth" in served


def test_disruption_budgets_cover_both_deployments() -> None:
    for component in ("ingress", "worker"):
        pdb = _one("PodDisruptionBudget", f"switchboard-{component}")
        pods = _one("Deployment", f"switchboard-{component}")["spec"]["template"]["metadata"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pods["labels"].items()


def test_config_and_secret_keys_are_settings() -> None:
    config = _one("ConfigMap", "switchboard-config")["data"]
    secret = _one("Secret", "switchboard-secrets")["stringData"]
    known = setting_env_names()
    assert set(config) <= known
    assert set(secret) <= known
    assert {"SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_API_KEYS"} <= set(secret)
    assert config["SWITCHBOARD_LANE_BACKEND"] == "redis"
    assert secret["SWITCHBOARD_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert all("CHANGE-ME" in value for value in secret.values())  # placeholders only
