"""The build service's Role in deploy/kubernetes is what its Tekton backend does, no more.

The backend runs a build's whole life against a FAKE Kubernetes API (kmock,
tests/kube_fake.py): submit, a create answered 409 and adopted, the watch, cancel, a
finished run's TaskRuns and step logs. Every request it sent, as (API group, resource,
verb), must be allowed by the Role, and every right the Role grants must have been used.
The test's own requests (playing Tekton) carry no token and are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from ajour_build.config import InstallationConfig, load_config
from ajour_build.core.fleet import load_fleet
from ajour_build.plan import PlannedBuild, plan_builds
from ajour_build.service.backends.tekton import TektonBackend
from ajour_build.service.records import Records
from tests.conftest import APP, CONFIG_YAML, REPO
from tests.kube_fake import KubeFake
from tests.tekton_harness import (
    NS,
    add_taskrun,
    children,
    condition,
    new_build,
    set_status,
    state_of,
    submit,
    wait_for,
)

RBAC = REPO / "deploy" / "kubernetes" / "base" / "build-service-rbac.yaml"
BACKEND_TOKEN = "the-build-service-account"
VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "DELETE": "delete"}

Right = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def granted() -> set[Right]:
    docs = list(yaml.safe_load_all(RBAC.read_text()))
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == ["ajour-build-service"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def used(kube: KubeFake) -> set[Right]:
    """(group, resource, verb) of every request the backend's client sent."""
    assert kube.api is not None
    found: set[Right] = set()
    for request in kube.api:
        if request.headers.get("Authorization") != f"Bearer {BACKEND_TOKEN}":
            continue  # the test playing Tekton
        kind, action = request.resource, request.action
        assert kind is not None and action is not None, f"not a resource: {request.url}"
        assert request.namespace == NS, f"a request outside the namespace: {request.url}"
        verb = {"PATCH": "patch", "PUT": "update"}.get(request.method, "?")
        resource = str(kind.plural)
        if request.subresource:
            resource += f"/{request.subresource}"
        found.add(
            (str(kind.group), resource, verb if action.value == "UPDATE" else VERBS[action.value])
        )
    return found


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    found = Records.sqlite(tmp_path / "state" / "builds.db")  # a file: threads share it
    yield found
    found.close()


@pytest.fixture
def config(tmp_path: Path) -> InstallationConfig:
    (tmp_path / "ajour.yaml").write_text(CONFIG_YAML)
    return load_config(tmp_path / "ajour.yaml", env={})


@pytest.fixture
def planned(tmp_path: Path, config: InstallationConfig) -> PlannedBuild:
    (tmp_path / "a.yaml").write_text(APP.format(name="app1"))
    fleet = load_fleet([tmp_path / "a.yaml"])
    return plan_builds(fleet, config).require_allowed().builds[0]


@pytest.fixture
def kube() -> Iterator[KubeFake]:
    with KubeFake() as fake:
        yield fake


@pytest.fixture
def backend(
    kube: KubeFake, records: Records, config: InstallationConfig
) -> Iterator[TektonBackend]:
    settings = client.Configuration(host=kube.url)
    settings.api_key = {"authorization": f"Bearer {BACKEND_TOKEN}"}
    found = TektonBackend(
        records,
        config,
        client.ApiClient(settings),
        retries=1,
        backoff=0.01,
        request_timeout=5,
        watch_timeout=1,
    )
    found._owns_client = True  # closed by stop()
    found.start()
    yield found
    found.stop()


def test_the_role_grants_exactly_what_the_tekton_backend_uses(
    kube: KubeFake, backend: TektonBackend, records: Records, planned: PlannedBuild
) -> None:
    api = kube.api_client()  # the test's own client: no token
    custom = client.CustomObjectsApi(api)
    # a create whose answer was lost: 409, then the backend reads the run and adopts it
    earlier = new_build(records, planned)
    custom.create_namespaced_custom_object(
        "tekton.dev", "v1", NS, "pipelineruns", backend.manifest(earlier, planned)
    )
    backend.submit(earlier, planned)
    # a run that finishes: results and step logs from its TaskRuns and their pods
    build = submit(backend, records, planned)
    name = build.backend_ref
    add_taskrun(api, f"{name}-clone", ["clone"], {"commit": "0" * 40})
    kube.pod_log(NS, f"{name}-clone-pod", "step-clone", "cloned\n")
    status = condition("True", "Succeeded")
    status["childReferences"] = children(("clone", f"{name}-clone"))
    set_status(api, name, status)
    wait_for("succeeded", lambda: state_of(records, build.id) == "succeeded")
    assert [line for _, line in records.logs(build.id)] == ["[clone/clone] cloned"]
    # cancel: by its record, and by label for a build whose record has no run yet
    assert backend.cancel(earlier.id) is True
    assert backend.cancel(new_build(records, planned).id) is False
    cast(Any, api).close()

    rights, role = used(kube), granted()
    assert rights - role == set(), "requests the Role does not allow"
    assert role - rights == set(), "rights the Role grants but the backend never uses"


def test_an_unused_right_or_a_missing_one_is_caught(kube: KubeFake) -> None:
    """The comparison itself: a request outside the Role is named."""
    api = client.ApiClient(client.Configuration(host=kube.url))
    api.configuration.api_key = {"authorization": f"Bearer {BACKEND_TOKEN}"}
    with pytest.raises(client.ApiException):
        client.CoreV1Api(api).delete_namespaced_pod("nope", NS)
    cast(Any, api).close()
    assert used(kube) - granted() == {("", "pods", "delete")}


def test_the_documented_role_is_the_deployed_one() -> None:
    """docs/tekton-backend.md's RBAC section shows the same rules as the manifest."""
    doc = (REPO / "docs" / "tekton-backend.md").read_text()
    block = doc.split("## RBAC", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (role,) = [d for d in yaml.safe_load_all(block) if d["kind"] == "Role"]
    (deployed,) = [d for d in yaml.safe_load_all(RBAC.read_text()) if d["kind"] == "Role"]
    assert role["rules"] == deployed["rules"]
