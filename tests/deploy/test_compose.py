"""deploy/docker-compose.yml parsed and checked (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import DEPLOY, ENV_NAME, ROOT, documents, setting_env_names

COMPOSE = DEPLOY / "docker-compose.yml"
APP_SERVICES = ("migrate", "ingress", "worker")
TEXT_SUFFIXES = {"", ".yml", ".yaml", ".md", ".example", ".json"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = documents(COMPOSE)
    return doc


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "migrate",
        "ingress",
        "worker",
        "redis",
        "postgres",
        "qdrant",
        "prometheus",
        "grafana",
    }


def test_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["ingress"]["command"] == ["serve", "--host", "0.0.0.0", "--workers", "0"]
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name in ("ingress", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}
        for backend in ("redis", "postgres", "qdrant"):
            assert deps[backend] == {"condition": "service_healthy"}


def test_one_image_built_from_the_repository(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == "switchboard:local"
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]) == DEPLOY / "Dockerfile"


def test_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "/readyz" in " ".join(services["ingress"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["worker"]["healthcheck"]["test"])
    for name in ("redis", "postgres", "qdrant", "prometheus", "grafana"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert len(test) > 1


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_volumes_are_declared_and_mounted(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used: set[str] = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):  # a bind mount of a file in deploy/
                assert (COMPOSE.parent / source).exists(), source
            else:
                used.add(source)
    assert used == declared
    assert {"redis-data", "postgres-data", "qdrant-data"} <= declared


def test_environment_names_are_settings(compose: dict[str, Any]) -> None:
    known = setting_env_names()
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        assert set(env) <= known, set(env) - known
        assert env["SWITCHBOARD_LANE_BACKEND"] == "redis"
        assert env["SWITCHBOARD_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["SWITCHBOARD_REDIS_URL"] == "redis://redis:6379/0"
        assert env["SWITCHBOARD_QDRANT_URL"] == "http://qdrant:6333"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES),
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_every_setting_named_in_deploy_exists(path: Path) -> None:
    names = set(ENV_NAME.findall(path.read_text()))
    assert names <= setting_env_names(), names - setting_env_names()
