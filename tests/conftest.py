"""Shared fixtures: paths, a fleet writer, and an in-process CLI runner."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

# the PostgreSQL fixtures (one session cluster; rollout stores on SQLite and PostgreSQL)
from tests.postgres import postgres_server, rollout_db  # noqa: F401

# The machine has 2 cores and CI may share them with services the tests start: judge the
# properties, not how fast inputs are generated (examples and shrinking are unchanged).
settings.register_profile("ajour", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("ajour")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
# Reference material that may sit next to a checkout (never next to a clone elsewhere). The tests
# use the vendored copies; only the ``reference`` tests compare those with this directory.
REFERENCE = REPO.parent / "shared"
# Every vendored file the tests read (tests/data/README.md and ajour_build/schemas/tekton/README.md
# say where each comes from): its path in the repository -> its path under REFERENCE.
VENDORED = {
    "tests/data/hawkbit/ddi.openapi.json": "schemas/hawkbit/ddi.openapi.json",
    "tests/data/hawkbit/mgmt.openapi.json": "schemas/hawkbit/mgmt.openapi.json",
    "tests/data/vectors/embedded-update.tsv": "vectors/embedded-update.tsv",
    **{
        f"ajour_build/schemas/tekton/{name}": f"schemas/tekton/{name}"
        for name in (
            "tekton-pipeline-v1.schema.json",
            "tekton-pipelinerun-v1.schema.json",
            "tekton-task-v1.schema.json",
            "tekton-taskrun-v1.schema.json",
        )
    },
}

CONFIG_YAML = """\
registry:
  prefix: registry.example.com/fw
allowed_applications: [app1, app2]
namespace: builds
service_account: builder
default_timeout: 45m
"""


def vendored(relpath: str) -> Path:
    """A vendored file (a key of ``VENDORED``, relative to the repository); it must exist."""
    assert relpath in VENDORED, f"{relpath} is not a vendored file (see VENDORED in tests/conftest)"
    path = REPO / relpath
    assert path.is_file(), f"vendored file missing: {path}"
    return path


def reference_copy(relpath: str) -> Path:
    """The reference copy of vendored file ``relpath``; skips the test if there is no ../shared."""
    if not REFERENCE.is_dir():
        pytest.skip(
            f"no reference material at {REFERENCE} (a clone elsewhere has none); the tests use"
            " the vendored copies"
        )
    path = REFERENCE / VENDORED[relpath]
    assert path.is_file(), f"{REFERENCE} exists but has no {VENDORED[relpath]}"
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
