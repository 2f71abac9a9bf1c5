"""README examples run as tests: its YAML is valid and its commands work as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ajour_build.config import load_config
from ajour_build.core.fleet import load_fleet
from ajour_build.plan import plan_builds
from ajour_build.render.pipelinerun import Renderer
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


COMMANDS = [
    line[2:] for block in blocks("console") for line in block.splitlines() if line.startswith("$ ")
]


def test_at_a_glance_yaml_is_valid_and_renders(tmp_path: Path) -> None:
    (block,) = blocks("yaml")
    (tmp_path / "fleet.yaml").write_text(block)
    fleet = load_fleet([tmp_path / "fleet.yaml"])
    assert set(fleet.applications) == {"blinky"}
    config = load_config(REPO / "examples" / "fleet" / "ajour.yaml", env={})
    (build,) = plan_builds(fleet, config).require_allowed().builds
    assert Renderer(config).manifest(build)["kind"] == "PipelineRun"


def test_there_are_commands_to_run() -> None:
    assert len(COMMANDS) >= 5


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command(command: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("AJOUR_CONFIG", None)
    result = subprocess.run(
        shlex.split(command), cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip()


def test_the_two_fresh_machine_commands_exist_and_ci_runs_the_test_one() -> None:
    (block,) = [b for b in blocks("sh") if "./scripts/demo" in b]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    for command in commands:
        assert os.access(REPO / command, os.X_OK)
    assert "./scripts/test" in (REPO / ".ci" / "run").read_text()
