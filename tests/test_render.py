"""Rendering: golden files, schema validity against the vendored v1 schemas, template hygiene."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ajour_build.config import load_config
from ajour_build.core.errors import RenderError
from ajour_build.core.fleet import load_fleet
from ajour_build.plan import plan_builds
from ajour_build.render.dump import dump_all
from ajour_build.render.pipelinerun import Renderer
from ajour_build.tekton.manifest import SCHEMA_FILES, ManifestValidator, strict_schema
from tests.conftest import APP, EXAMPLES, REPO, vendored

GOLDEN = REPO / "tests" / "golden"
UPDATE = os.environ.get("AJOUR_UPDATE_GOLDEN") == "1"
Write = Callable[[str, str], Path]


def shared_validator(kind: str) -> jsonschema.protocols.Validator:
    """A strict validator built straight from the vendored schema file, not by ManifestValidator.

    tests/test_vendored.py checks the file against its reference copy, where there is one.
    """
    schema = json.loads(vendored(f"ajour_build/schemas/tekton/{SCHEMA_FILES[kind]}").read_text())
    return jsonschema.Draft7Validator(strict_schema(schema))


def render_examples() -> list[dict[str, Any]]:
    fleet = load_fleet([EXAMPLES / "fleet"])
    config = load_config(EXAMPLES / "fleet" / "ajour.yaml", env={})
    renderer = Renderer(config)
    return [renderer.manifest(b) for b in plan_builds(fleet, config).require_allowed().builds]


def test_golden_examples_render() -> None:
    if UPDATE and os.environ.get("CI"):
        pytest.fail("AJOUR_UPDATE_GOLDEN must never be set in CI")
    text = dump_all(render_examples())
    golden = GOLDEN / "examples-fleet.yaml"
    if UPDATE:
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), "run with AJOUR_UPDATE_GOLDEN=1 once to create the golden file"
    assert text == golden.read_text(encoding="utf-8"), (
        "rendered output changed; if intended, regenerate with AJOUR_UPDATE_GOLDEN=1 and review"
        " the diff"
    )


def test_rendered_runs_validate_against_the_reference_schemas() -> None:
    validator = shared_validator("PipelineRun")
    manifests = render_examples()
    assert len(manifests) == 4
    for manifest in manifests:
        errors = [e.message for e in validator.iter_errors(manifest)]
        assert errors == []
        assert manifest["apiVersion"] == "tekton.dev/v1"
        assert "ClusterTask" not in json.dumps(manifest)


def test_validator_rejects_broken_manifests() -> None:
    good = render_examples()[0]
    validator = ManifestValidator()
    assert validator.problems(good) == []

    typo = json.loads(json.dumps(good))
    typo["spec"]["taskRunTemplate"]["serviceAcountName"] = "x"
    assert any("serviceAcountName" in p for p in validator.problems(typo))
    assert list(shared_validator("PipelineRun").iter_errors(typo))  # the plain schema agrees

    wrong_type = json.loads(json.dumps(good))
    wrong_type["spec"]["timeouts"]["pipeline"] = 30
    assert any("is not of type 'string'" in p for p in validator.problems(wrong_type))

    beta = {**good, "apiVersion": "tekton.dev/v1beta1"}
    assert validator.problems(beta) == [
        "apiVersion: expected 'tekton.dev/v1', got 'tekton.dev/v1beta1'"
    ]

    bad_name = json.loads(json.dumps(good))
    bad_name["metadata"]["name"] = "Not_Valid"
    assert any("DNS-1123" in p for p in validator.problems(bad_name))

    bad_label = json.loads(json.dumps(good))
    bad_label["metadata"]["labels"]["ajour.dev/application"] = "x" * 64
    assert any("legal label value" in p for p in validator.problems(bad_label))


def test_script_interpolation_is_rejected() -> None:
    task = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Task",
        "metadata": {"name": "t"},
        "spec": {"steps": [{"name": "s", "image": "i", "script": "echo $(params.x)"}]},
    }
    (problem,) = ManifestValidator().problems(task)
    assert "spec.steps[0].script" in problem and "env:" in problem


def test_every_template_expression_uses_tojson() -> None:
    templates = list((REPO / "ajour_build" / "render" / "templates").glob("*.j2"))
    assert templates
    for template in templates:
        expressions = re.findall(r"\{\{(.*?)\}\}", template.read_text())
        assert expressions
        for expr in expressions:
            assert re.search(r"\|\s*tojson\s*$", expr), f"{template.name}: {{{{{expr}}}}}"


def test_hostile_values_stay_data(write: Write, tmp_path: Path) -> None:
    """Quotes, newlines and YAML syntax in values cannot change the manifest's structure."""
    nasty = 'x"\n  injected: true\n# $(params.git-url) {{ 7 * 7 }}'
    text = APP.format(name="app1") + "        args:\n          - " + json.dumps(nasty) + "\n"
    text += "        env:\n          - name: EVIL\n            value: " + json.dumps(nasty) + "\n"
    fleet = load_fleet([write("a.yaml", text)])
    config = load_config(None, env={"AJOUR_ALLOWED_APPLICATIONS": '["app1"]'})
    manifest = Renderer(config).manifest(plan_builds(fleet, config).builds[0])
    params = {p["name"]: p["value"] for p in manifest["spec"]["params"]}
    assert params["build-args"] == [nasty]
    (spec,) = manifest["spec"]["taskRunSpecs"]
    assert spec["pipelineTaskName"] == "build"
    assert spec["podTemplate"]["env"] == [{"name": "EVIL", "value": nasty}]
    assert "injected" not in manifest["spec"]
    reparsed = yaml.safe_load(dump_all([manifest]))
    assert reparsed == manifest


def test_versions_are_quoted_in_output() -> None:
    text = dump_all(render_examples())
    assert 'value: "0.10"' in text
    for doc in yaml.safe_load_all(text):
        revs = [p["value"] for p in doc["spec"]["params"] if p["name"] == "git-revision"]
        assert all(isinstance(r, str) for r in revs)


def test_render_errors_are_reported_as_bugs() -> None:
    fleet = load_fleet([EXAMPLES / "fleet"])
    config = load_config(EXAMPLES / "fleet" / "ajour.yaml", env={})
    build = plan_builds(fleet, config).builds[0]
    broken = Renderer(config.model_copy(update={"namespace": "Bad_NS"}))
    with pytest.raises(RenderError, match="is invalid"):
        broken.manifest(build)
