"""The service with ``backend: tekton``, end to end against kmock, a FAKE Kubernetes API.

push → signed webhook → the service creates a schema-valid PipelineRun (client from a
kubeconfig, as a user configures it) → "Tekton" (this test, patching status on the fake)
runs and finishes it → the API shows the digest; cancel sets ``spec.status``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client

from ajour_build.tekton.manifest import ManifestValidator
from tests.firmware import fake_builder
from tests.kube_fake import KubeFake
from tests.service import BUILDER, SECRET, TOKEN, Harness, github_push
from tests.test_service import APPS

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def kube() -> Iterator[KubeFake]:
    with KubeFake() as fake:
        yield fake


def kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "ajour", "user": {"token": "kube-token-never-logged"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "ajour"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return path


def runs(api: client.ApiClient) -> list[dict[str, Any]]:
    found = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "tekton.dev", "v1", "ajour", "pipelineruns"
    )
    return cast(list[dict[str, Any]], cast(dict[str, Any], found)["items"])


def finish(api: client.ApiClient, name: str, reason: str, status: str = "True") -> None:
    body: dict[str, Any] = {
        "conditions": [{"type": "Succeeded", "status": status, "reason": reason, "message": ""}]
    }
    if status == "True":
        body["results"] = [
            {"name": "IMAGE_URL", "value": "127.0.0.1:5000/ajour/fw:latest"},
            {"name": "IMAGE_DIGEST", "value": DIGEST},
        ]
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        "tekton.dev", "v1", "ajour", "pipelineruns", name, {"status": body}
    )


def test_push_creates_a_pipelinerun_and_its_status_reaches_the_api(
    tmp_path: Path,
    kube: KubeFake,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", kube.url)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    h = Harness(
        tmp_path,
        "allowed_applications: [fw]\n"
        "sources: {allow_local: true}\n"
        f"service: {{backend: tekton, tokens: [{TOKEN}], webhooks: {{github: {SECRET}}}}}\n",
    )
    fake_builder(tmp_path / "builders", "fake", BUILDER)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "fleet.yaml").write_text(APPS.format(uri=h.remote_uri))
    before, after = h.commit({"main.c": "int main(void) { return 0; }\n"})
    api = kube.api_client()
    with h.running(), h.client() as c:
        reply = h.github(github_push(h.remote_uri, "refs/heads/main", before, after))
        assert reply.status_code == 202, reply.text
        (build,) = reply.json()["triggered"]
        assert build["backend"] == "tekton"
        (run,) = runs(api)
        assert ManifestValidator().problems(run) == []
        assert run["metadata"]["labels"]["ajour.dev/build-id"] == build["id"]
        assert run["metadata"]["namespace"] == "ajour"
        params = {p["name"]: p["value"] for p in run["spec"]["params"]}
        assert params["git-url"] == h.remote_uri and params["git-revision"] == "main"
        name = run["metadata"]["name"]
        assert c.get(f"/api/v1/builds/{build['id']}").json()["backendRef"] == name

        finish(api, name, "Succeeded")
        done = h.wait(build["id"], ("succeeded", "failed"), timeout=20)
        assert done["digest"] == DIGEST
        assert done["reference"] == "127.0.0.1:5000/ajour/fw:latest"

        # a device build, then a cancel through the API
        second = c.post("/api/v1/applications/fw/devices/d2/trigger").json()["triggered"][0]
        (other,) = [r for r in runs(api) if r["metadata"]["name"] != name]
        assert c.post(f"/api/v1/builds/{second['id']}/cancel").status_code == 200
        deadline = time.monotonic() + 10
        while runs(api)[-1]["spec"].get("status") != "Cancelled":
            assert time.monotonic() < deadline, "the PipelineRun was never cancelled"
            time.sleep(0.05)
        finish(api, other["metadata"]["name"], "Cancelled", status="False")
        assert h.wait(second["id"], ("cancelled", "failed"), timeout=20)["state"] == "cancelled"
    assert "kube-token-never-logged" not in caplog.text


def test_a_restart_adopts_pipelineruns_that_went_on_in_the_cluster(
    tmp_path: Path, kube: KubeFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", kube.url)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    h = Harness(
        tmp_path,
        "allowed_applications: [fw]\n"
        "sources: {allow_local: true}\n"
        f"service: {{backend: tekton, on_interrupted: retry, tokens: [{TOKEN}]}}\n",
    )
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "fleet.yaml").write_text(APPS.format(uri=h.remote_uri))
    api = kube.api_client()
    with h.running(), h.client() as c:
        build = c.post("/api/v1/applications/fw/devices/d1/trigger").json()["triggered"][0]
    (run,) = runs(api)
    finish(api, run["metadata"]["name"], "Succeeded")  # while the service is down
    with h.running():
        done = h.wait(build["id"], ("succeeded", "failed", "interrupted"), timeout=20)
        with h.client() as c:
            count = c.get("/api/v1/builds").json()["count"]
    assert done["state"] == "succeeded" and done["digest"] == DIGEST
    assert count == 1 and len(runs(api)) == 1  # adopted, not interrupted and built again
