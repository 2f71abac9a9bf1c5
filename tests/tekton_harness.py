"""Fixtures and helpers for the Tekton backend tests against a FAKE Kubernetes API (kmock on
loopback, see tests/kube_fake.py): PipelineRuns are driven the way Tekton would, by patching
their ``status`` on the fake."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client

from ajour_build.config import InstallationConfig, load_config
from ajour_build.core.fleet import load_fleet
from ajour_build.lifecycle import Build
from ajour_build.plan import PlannedBuild, plan_builds
from ajour_build.service.backends.tekton import TektonBackend
from ajour_build.service.records import Records
from tests.conftest import APP, CONFIG_YAML
from tests.kube_fake import KubeFake

Write = Callable[[str, str], Path]
NS = "builds"  # CONFIG_YAML's namespace
DIGEST = "sha256:" + "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def kube() -> Iterator[KubeFake]:
    with KubeFake() as fake:
        yield fake


@pytest.fixture
def api(kube: KubeFake) -> Iterator[client.ApiClient]:
    api_client = kube.api_client()
    yield api_client
    cast(Any, api_client).close()


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    found = Records.sqlite(tmp_path / "state" / "builds.db")  # a file: threads share it
    yield found
    found.close()


@pytest.fixture
def config(tmp_path: Path) -> InstallationConfig:
    path = tmp_path / "ajour.yaml"
    path.write_text(CONFIG_YAML)
    return load_config(path, env={})


@pytest.fixture
def planned(write: Write, config: InstallationConfig) -> PlannedBuild:
    fleet = load_fleet([write("a.yaml", APP.format(name="app1"))])
    return plan_builds(fleet, config).require_allowed().builds[0]


@pytest.fixture
def backend(
    api: client.ApiClient, records: Records, config: InstallationConfig
) -> Iterator[TektonBackend]:
    found = TektonBackend(
        records, config, api, retries=1, backoff=0.01, request_timeout=5, watch_timeout=1
    )
    found.start()
    yield found
    found.stop()


def new_build(records: Records, planned: PlannedBuild, version: str | None = None) -> Build:
    return records.create(
        Build.queued(
            name=planned.name,
            spec_hash=planned.key,
            application=planned.application,
            consumers=tuple(str(c) for c in planned.consumers),
            backend="tekton",
            reason="test",
            git_url=planned.build.source.git.uri,
            revision=planned.build.source.git.rev,
            image=planned.image,
            publish_to=planned.publish_to,
            version=version,
        )
    )


def submit(
    backend: TektonBackend, records: Records, planned: PlannedBuild, version: str | None = None
) -> Build:
    build = new_build(records, planned, version)
    backend.submit(build, planned)
    return records.require(build.id)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def state_of(records: Records, build_id: str) -> str:
    return records.require(build_id).state


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def get_run(api: client.ApiClient, name: str) -> dict[str, Any]:
    found = custom(api).get_namespaced_custom_object("tekton.dev", "v1", NS, "pipelineruns", name)
    return cast(dict[str, Any], found)


def set_status(api: client.ApiClient, name: str, status: dict[str, Any]) -> None:
    """Play Tekton's controller: write the PipelineRun's status on the fake."""
    custom(api).patch_namespaced_custom_object_status(
        "tekton.dev", "v1", NS, "pipelineruns", name, {"status": status}
    )


def condition(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "conditions": [
            {"type": "Succeeded", "status": status, "reason": reason, "message": message}
        ]
    }


def add_taskrun(
    api: client.ApiClient, name: str, steps: list[str], results: dict[str, str] | None = None
) -> None:
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {},
        "status": {
            "podName": f"{name}-pod",
            "steps": [{"name": s, "container": f"step-{s}"} for s in steps],
            "results": [
                {"name": k, "type": "string", "value": v} for k, v in (results or {}).items()
            ],
        },
    }
    custom(api).create_namespaced_custom_object("tekton.dev", "v1", NS, "taskruns", body)


def children(*tasks: tuple[str, str]) -> list[dict[str, str]]:
    return [
        {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": n, "pipelineTaskName": t}
        for t, n in tasks
    ]


def log_lines(records: Records, build_id: str) -> list[str]:
    return [line for _, line in records.logs(build_id)]
