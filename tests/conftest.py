"""Shared fixtures: paths, a fleet writer, and an in-process CLI runner."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

# The machine has 2 cores and CI may share them with services the tests start: judge the
# properties, not how fast inputs are generated (examples and shrinking are unchanged).
settings.register_profile("ajour", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("ajour")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EXAMPLES = REPO / "examples"

CONFIG_YAML = """\
registry:
  prefix: registry.example.com/fw
allowed_applications: [app1, app2]
namespace: builds
service_account: builder
default_timeout: 45m
"""


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    assert path.exists(), f"reference material missing: {path} (tests read ../shared)"
    return path


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a dedented file under tmp_path/fleet and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / "fleet" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    return tmp_path / "fleet"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


APP = """\
kind: Application
metadata:
  name: {name}
spec:
  firmware:
    container:
      image: {name}:latest
      build:
        image: registry.example.com/builders/arm-gcc:1
        source:
          git:
            uri: https://git.example.com/org/fw.git
            project: boards/{name}
            rev: main
        artifact:
          path: out/fw.bin
"""
