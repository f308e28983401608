"""Helpers of the deployment tests: file locations, YAML documents, Settings and metric names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bot.config import Settings
from bot.observability import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

ENV_NAME = re.compile(r"\bSWITCHBOARD_[A-Z0-9_]+\b")
METRIC_NAME = re.compile(r"\bswitchboard_[a-z0-9_]+\b")


def documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of ``path`` (``---`` separated), empty ones dropped."""
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def setting_env_names() -> set[str]:
    """``SWITCHBOARD_<FIELD>`` for every field of :class:`bot.config.Settings`."""
    return {f"SWITCHBOARD_{name.upper()}" for name in Settings.model_fields}


def exposed_metric_names() -> dict[str, str]:
    """Sample names a hub's ``/metrics`` can expose, mapped to their family name.

    Counters expose ``NAME_total``; histograms ``NAME_bucket``, ``NAME_sum`` and ``NAME_count``.
    """
    names: dict[str, str] = {}
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(
            family.type, [""]
        )
        for suffix in suffixes:
            names[family.name + suffix] = family.name
    return names
