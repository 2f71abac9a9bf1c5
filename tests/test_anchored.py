"""Every name, reference and address validator matches the whole value: a trailing newline
(which ``re.match`` with ``$`` lets through) is refused everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ajour_build.config import load_config
from ajour_build.core.artifact.reference import parse_oci
from ajour_build.core.errors import ArtifactError, SpecError
from ajour_build.core.fleet import load_fleet
from ajour_build.tekton.manifest import ManifestValidator
from delivery.mqtt import TopicTemplate


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"registry": {"prefix": "registry.example.com/fw\n"}}, "is not a registry prefix"),
        ({"delivery": {"http": "127.0.0.1:8081\n"}}, "is not HOST:PORT"),
        ({"delivery": {"mqtt": "mqtt://127.0.0.1:1883\n"}}, "is not a broker URL"),
        ({"workspace": {"storage": "1Gi\n"}}, "is not a Kubernetes quantity"),
        ({"pipeline_ref": {"params": {"name\n": "x"}}}, "resolver param name"),
        ({"allowed_applications": ["app\n"]}, "is not a DNS-1123 label"),
        ({"publish_repositories": {"fw": ["fw-shared\n"]}}, "is not a repository name"),
    ],
)
def test_config_values_with_a_trailing_newline(
    tmp_path: Path, config: dict[str, object], where: str
) -> None:
    path = tmp_path / "ajour.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML: the newline is in the value
    with pytest.raises(SpecError, match=where):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("name", "image"),
    [("app\n", "app:latest"), ("app", "app:latest\n"), ("app", "app\n"), ("app", "app:lätest")],
)
def test_spec_names_and_images_with_a_trailing_newline(
    tmp_path: Path, name: str, image: str
) -> None:
    doc = {
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {"firmware": {"container": {"image": image}}},
    }
    (tmp_path / "app.json").write_text(json.dumps(doc))
    with pytest.raises(SpecError):
        load_fleet([tmp_path / "app.json"])


@pytest.mark.parametrize(
    "url",
    [
        "oci://127.0.0.1:5000/fw/app:latest\n",
        "oci://127.0.0.1:5000/fw/app\n",
        "oci://127.0.0.1:5000/fw/app:lätest",  # tags are ASCII
    ],
)
def test_publish_targets_with_a_trailing_newline(url: str) -> None:
    with pytest.raises(ArtifactError):
        parse_oci(url)


def test_tekton_names_with_a_trailing_newline() -> None:
    manifest = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "ajour\n", "namespace": "ajour\n", "labels": {"a": "b\n"}},
        "spec": {"tasks": []},
    }
    problems = ManifestValidator().problems(manifest)
    assert "metadata.name: 'ajour\\n' is not a DNS-1123 subdomain" in problems
    assert "metadata.namespace: 'ajour\\n' is not a DNS-1123 label" in problems
    assert "metadata.labels[a]: 'b\\n' is not a legal label value" in problems


def test_mqtt_topics_with_a_trailing_newline() -> None:
    topics = TopicTemplate("ajour/{app}/{device}/dfu")
    assert topics.parse("ajour/app/dev/dfu") == ("app", "dev")
    assert topics.parse("ajour/app/dev/dfu\n") is None
