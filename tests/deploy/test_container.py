"""The Dockerfile, checked statically (no Docker engine runs here), and its entrypoint run from the venv.

The image cannot be built on this machine (no engine, no registry), so what can be checked without building
is: the stages and their base images, the runtime user, the entrypoint and every GATEWAY_* setting of the
image against the gateway's real parser, that no build tools reach the final stage, and that the build
context (.dockerignore) holds what the Dockerfile copies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.command_line import parse_settings
from gateway.config import OPTIONS

from .files import (
    DOCKERFILE,
    REPO,
    Stage,
    dockerfile_instructions,
    dockerfile_stages,
    dockerignore_excludes,
    dockerignore_patterns,
    exec_form,
)

OPTION_ENVS = {option.env for option in OPTIONS}
# Debian's slim images of CPython 3.11 (the project's Python); bookworm is Debian 12.
SLIM_DEBIAN = re.compile(r"python:3\.11(\.\d+)?-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|[\w.-]+-dev)\b")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def command_line(stage: Stage) -> tuple[list[str], list[str]]:
    """(entrypoint, arguments): what the container runs with no arguments given."""
    entrypoints, cmds = stage.all("ENTRYPOINT"), stage.all("CMD")
    assert len(entrypoints) == 1, "exactly one ENTRYPOINT in the final stage"
    assert len(cmds) <= 1
    return exec_form(entrypoints[0]), exec_form(cmds[0]) if cmds else []


def test_multi_stage_build_on_slim_debian(stages: list[Stage], final: Stage) -> None:
    assert len(stages) >= 2, "a build stage and a runtime stage"
    for stage in stages:
        assert SLIM_DEBIAN.fullmatch(stage.image), stage.image
    # The build stage makes a venv with `pip install .` under the project's constraints.
    build_runs = " ".join(i.args for stage in stages[:-1] for i in stage.all("RUN"))
    assert re.search(r"pip install (--constraint|-c) constraints\.txt \.", build_runs), build_runs
    assert "-e" not in build_runs.split(), "an editable install would need the source tree at run time"


def test_final_stage_copies_only_the_venv_from_the_build(stages: list[Stage], final: Stage) -> None:
    build_names = {stage.name for stage in stages[:-1]}
    copies = final.all("COPY") + final.all("ADD")
    assert copies, "the final stage copies the venv"
    for copy in copies:
        assert copy.keyword == "COPY" and copy.flags.get("from") in build_names, copy
    assert [copy.args.split()[0] for copy in copies] == ["/opt/venv"]


def test_no_build_tools_in_the_final_stage(final: Stage) -> None:
    for run in final.all("RUN"):
        if "install" in run.args:
            assert not BUILD_TOOLS.search(run.args), run.args


def test_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets USER"
    user = users[-1].args
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER must be numeric for runAsNonRoot: {user}"
    assert all(int(part) != 0 for part in user.split(":")), user


def test_entrypoint_and_environment_are_accepted_by_the_gateway(final: Stage) -> None:
    entrypoint, arguments = command_line(final)
    assert entrypoint == ["python", "-m", "gateway"]
    env = final.env()
    for name in env:
        if name.startswith(("GATEWAY_", "GLANCE_")):
            assert name in OPTION_ENVS, f"{name} is no option of the gateway"
    settings = parse_settings(arguments, environ=env)
    # A container must listen on all interfaces (the gateway's default is loopback).
    assert settings.host in ("0.0.0.0", "[::]", "::")


def test_exposes_the_ports_the_gateway_listens_on(final: Stage) -> None:
    _, arguments = command_line(final)
    settings = parse_settings(arguments, environ=final.env())
    exposed = {int(port.split("/")[0]) for expose in final.all("EXPOSE") for port in expose.args.split()}
    assert settings.port in exposed
    # The health and metrics ports are off by default; the Kubernetes manifest sets these two.
    assert {8081, 9090} <= exposed


def test_the_build_context_holds_what_is_copied_and_little_else() -> None:
    patterns = dockerignore_patterns()
    for instruction in dockerfile_instructions(DOCKERFILE.read_text()):
        if instruction.keyword in ("COPY", "ADD") and "from" not in instruction.flags:
            for source in instruction.args.split()[:-1]:
                assert (REPO / source).exists(), source
                assert not dockerignore_excludes(patterns, source), f"{source} is left out of the context"
                if (REPO / source).is_dir():
                    assert not dockerignore_excludes(patterns, f"{source}/__init__.py")
    for bulky in (".venv/bin/python", ".git/HEAD", ".state/glance-venv", "node_modules/x", "tests/unit"):
        assert dockerignore_excludes(patterns, bulky), bulky
    assert dockerignore_excludes(patterns, "gateway/__pycache__/server.cpython-311.pyc")


def test_the_entrypoint_runs_from_the_venv(final: Stage, tmp_path: Path) -> None:
    """`python -m gateway --help` as the container runs it: the image's environment, outside the source tree
    (the container's working directory is /), with the venv's python first on PATH."""
    entrypoint, arguments = command_line(final)
    env = {k: v for k, v in final.env().items() if k != "PATH"}
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    done = subprocess.run(
        [*entrypoint, *arguments, "--help"],  # "python" found on PATH, as in the image
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert shutil.which(entrypoint[0], path=env["PATH"]) == str(Path(sys.executable).parent / entrypoint[0])
    for option in OPTIONS:
        assert option.flag in done.stdout
