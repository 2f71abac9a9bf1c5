"""The static Tekton YAML in pipelines/: schema-valid, injection-free, wired to the renderer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ajour_build.tekton.manifest import ManifestValidator
from tests.conftest import REPO
from tests.test_render import render_examples, shared_validator

PIPELINES = REPO / "pipelines"
FILES = sorted(PIPELINES.rglob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    out = {}
    for path in FILES:
        doc = load(path)
        if doc["kind"] == kind:
            out[doc["metadata"]["name"]] = doc
    return out


def test_there_are_tasks_and_a_pipeline() -> None:
    assert set(by_kind("Task")) == {
        "ajour-git-clone",
        "ajour-firmware-build",
        "ajour-firmware-publish",
        "ajour-builder-image",
    }
    assert set(by_kind("Pipeline")) == {"ajour-firmware", "ajour-builder-images"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_static_manifests_are_strictly_valid(path: Path) -> None:
    doc = load(path)
    assert [e.message for e in shared_validator(doc["kind"]).iter_errors(doc)] == []
    assert ManifestValidator().problems(doc) == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_params_never_reach_a_shell(path: Path) -> None:
    text = path.read_text()
    assert "script:" not in text
    doc = load(path)
    for task in by_kind("Task").values():
        for step in task["spec"]["steps"]:
            for word in step.get("command", []):
                assert "$(" not in word
            assert not re.search(r"\b(sh|bash)\b", " ".join(step.get("command", [])))
    assert doc


def test_each_task_has_a_catalog_readme() -> None:
    for path in FILES:
        readme = path.parent / "README.md"
        assert readme.exists(), f"{path} has no README.md"
        text = readme.read_text()
        name = load(path)["metadata"]["name"]
        assert name in text
        for section in ("## Parameters", "## Workspaces"):
            assert section.lower() in text.lower(), f"{readme}: missing {section}"


def test_renderer_and_pipeline_agree_on_params_and_workspaces() -> None:
    pipeline = by_kind("Pipeline")["ajour-firmware"]["spec"]
    declared = {p["name"]: p for p in pipeline["params"]}
    required = {n for n, p in declared.items() if "default" not in p}
    workspaces = {w["name"]: w for w in pipeline["workspaces"]}
    task_names = {t["name"] for t in pipeline["tasks"]}
    for run in render_examples():
        given = {p["name"]: p["value"] for p in run["spec"]["params"]}
        assert set(given) <= set(declared), set(given) - set(declared)
        assert required <= set(given), required - set(given)
        for name, value in given.items():
            expected = declared[name].get("type", "string")
            assert isinstance(value, list) == (expected == "array"), name
        bound = {w["name"] for w in run["spec"]["workspaces"]}
        assert bound <= set(workspaces)
        assert {n for n, w in workspaces.items() if not w.get("optional")} <= bound
        for spec in run["spec"].get("taskRunSpecs", []):
            assert spec["pipelineTaskName"] in task_names
    results = {r["name"] for r in pipeline["results"]}
    assert {"IMAGE_URL", "IMAGE_DIGEST", "CHAINS-GIT_URL", "CHAINS-GIT_COMMIT"} <= results


def test_pipeline_tasks_pass_every_required_task_param() -> None:
    tasks = by_kind("Task")
    pipeline = by_kind("Pipeline")["ajour-firmware"]["spec"]
    for ptask in pipeline["tasks"]:
        task = tasks[ptask["taskRef"]["name"]]["spec"]
        declared = {p["name"]: p for p in task["params"]}
        given = {p["name"] for p in ptask.get("params", [])}
        assert given <= set(declared)
        assert {n for n, p in declared.items() if "default" not in p} <= given
        assert "resolver" not in ptask["taskRef"] and ptask["taskRef"].get("kind", "Task") == "Task"


NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def test_the_readme_counts_and_lists_every_resource() -> None:
    readme = (PIPELINES / "README.md").read_text()
    # "all six resources": every count of all the resources is the number of files
    counts = re.findall(r"\ball (\w+) resources\b", readme)
    assert counts, "the README no longer says how many resources there are"
    assert {NUMBERS.get(word, -1) for word in counts} == {len(FILES)}, counts
    for path in FILES:
        assert f"`{path.relative_to(PIPELINES)}`" in readme, f"{path} is not in the README"
