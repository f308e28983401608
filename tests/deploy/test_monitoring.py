"""Prometheus and Grafana configuration: parse, and name only metrics the hub exposes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.deploy.manifests import DEPLOY, METRIC_NAME, documents, exposed_metric_names

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    with (GRAFANA / "dashboards" / "switchboard.json").open() as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_scrape_config_covers_ingress_and_workers() -> None:
    (config,) = documents(PROMETHEUS / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for component in ("ingress", "worker"):
        job = jobs[f"switchboard-{component}"]
        assert job["metrics_path"] == "/metrics"
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == [component]  # the compose service names
        assert sd["port"] == 8080
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]


def test_alert_rules_name_exposed_metrics() -> None:
    (rules,) = documents(PROMETHEUS / "rules.yml")
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert exprs
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used
    assert used <= set(exposed_metric_names()), used - set(exposed_metric_names())


def test_adapter_rule_names_an_exposed_metric() -> None:
    (values,) = documents(PROMETHEUS / "adapter-values.yaml")
    for rule in values["rules"]["external"]:
        (name,) = METRIC_NAME.findall(rule["seriesQuery"])
        assert name in exposed_metric_names()


def test_dashboard_shows_every_metric_and_only_real_ones(dashboard: dict[str, Any]) -> None:
    exposed = exposed_metric_names()
    used = {name for expr in _exprs(dashboard) for name in METRIC_NAME.findall(expr)}
    assert used <= set(exposed), used - set(exposed)
    assert {exposed[name] for name in used} == set(exposed.values())  # every family shown


def test_dashboard_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    (datasources,) = documents(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}
        assert panel["targets"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_dashboard_provider_path_is_mounted() -> None:
    (providers,) = documents(GRAFANA / "provisioning" / "dashboards" / "switchboard.yml")
    (provider,) = providers["providers"]
    (compose,) = documents(DEPLOY / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
