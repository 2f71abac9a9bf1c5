"""The Tekton backend against a FAKE Kubernetes API (kmock on loopback): conflicts, an
unreachable or silent API server, a watch that survives 410s, dropped connections and bad
objects, and the kubeconfig."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client

from ajour_build.config import InstallationConfig
from ajour_build.plan import PlannedBuild
from ajour_build.service.backends.backend import BackendError
from ajour_build.service.backends.tekton import (
    TektonBackend,
    api_client_from_environment,
    run_name,
)
from ajour_build.service.backends.tekton_watch import BUILD_ID_LABEL
from ajour_build.service.records import Records
from tests.kube_fake import PIPELINERUNS, KubeFake
from tests.stall import silent
from tests.tekton_harness import (
    NS,
    condition,
    custom,
    new_build,
    set_status,
    state_of,
    submit,
    wait_for,
)
from tests.tekton_harness import api as api  # a fixture
from tests.tekton_harness import backend as backend  # a fixture
from tests.tekton_harness import config as config  # a fixture
from tests.tekton_harness import kube as kube  # a fixture
from tests.tekton_harness import planned as planned  # a fixture
from tests.tekton_harness import records as records  # a fixture


# -- 4. 409 ---------------------------------------------------------------------------------
def test_existing_run_of_another_build_is_a_conflict_and_our_own_is_adopted(
    backend: TektonBackend, api: client.ApiClient, records: Records, planned: PlannedBuild
) -> None:
    other = new_build(records, planned)
    name = run_name(planned.name, other.id)
    squatter = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": NS, "labels": {BUILD_ID_LABEL: "b-someone"}},
        "spec": {},
    }
    custom(api).create_namespaced_custom_object("tekton.dev", "v1", NS, "pipelineruns", squatter)
    with pytest.raises(BackendError) as refused:
        backend.submit(other, planned)
    assert refused.value.status == 409
    assert name in str(refused.value) and "b-someone" in str(refused.value)
    assert records.require(other.id).backend_ref == ""

    mine = new_build(records, planned)  # an earlier attempt created it, then the answer got lost
    earlier = backend.manifest(mine, planned)
    custom(api).create_namespaced_custom_object("tekton.dev", "v1", NS, "pipelineruns", earlier)
    backend.submit(mine, planned)
    assert records.require(mine.id).backend_ref == earlier["metadata"]["name"]
    listed = custom(api).list_namespaced_custom_object("tekton.dev", "v1", NS, "pipelineruns")
    ours = [
        i
        for i in cast(dict[str, Any], listed)["items"]
        if i["metadata"]["labels"].get(BUILD_ID_LABEL) == mine.id
    ]
    assert len(ours) == 1


# -- 5. API down ----------------------------------------------------------------------------
def test_unreachable_api_is_a_fast_precise_503_without_credentials(
    records: Records,
    config: InstallationConfig,
    planned: PlannedBuild,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.api_key = {"authorization": "Bearer s3cr3t-t0ken"}
    down = client.ApiClient(configuration)
    backend = TektonBackend(records, config, down, retries=2, backoff=0.01, request_timeout=2)
    build = new_build(records, planned)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    try:
        with pytest.raises(BackendError) as failed:
            backend.submit(build, planned)
    finally:
        cast(Any, down).close()
    assert time.monotonic() - started < 5
    message = str(failed.value)
    assert failed.value.status == 503 and failed.value.retry_after
    assert f"http://127.0.0.1:{port}" in message
    assert "unreachable after 3 attempts" in message and "kubeconfig" in message
    assert "s3cr3t" not in message and "s3cr3t" not in caplog.text
    assert records.require(build.id).backend_ref == ""


def test_a_silent_api_server_ends_each_call_at_its_deadline(
    records: Records, config: InstallationConfig, planned: PlannedBuild
) -> None:
    with silent() as server:
        silent_api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{server.port}"))
        backend = TektonBackend(
            records, config, silent_api, retries=4, backoff=0.5, request_timeout=1, call_deadline=3
        )
        build = new_build(records, planned)
        try:
            for call in (lambda: backend.submit(build, planned), lambda: backend.cancel(build.id)):
                started = time.monotonic()
                with pytest.raises(BackendError) as failed:
                    call()
                # five tries of 1 s and 7.5 s of backoff would take 12.5 s; the deadline is 3 s
                assert time.monotonic() - started < 8  # (the margin is for a loaded machine)
                assert failed.value.status == 503
                assert "unreachable after 2 attempts" in str(failed.value)
        finally:
            cast(Any, silent_api).close()
        assert server.connections, "the API server was never reached"


# -- 6. the watch survives ------------------------------------------------------------------
def test_watch_lists_again_after_410_and_resumes_after_a_dropped_connection(
    backend: TektonBackend,
    api: client.ApiClient,
    kube: KubeFake,
    records: Records,
    planned: PlannedBuild,
) -> None:
    first, second = submit(backend, records, planned), submit(backend, records, planned)
    # a resumed watch (the first ended after its 1 s timeout), well after the first list
    wait_for("a resumed watch", lambda: kube.requests("watch", PIPELINERUNS) >= 2)
    lists = kube.requests("list", PIPELINERUNS)

    kube.expire_watches()  # the open watch ends with 410 Gone: the backend must list again
    wait_for("a new list", lambda: kube.requests("list", PIPELINERUNS) > lists)
    set_status(api, first.backend_ref, condition("Unknown", "Running"))
    wait_for("running after 410", lambda: state_of(records, first.id) == "running")

    lists, watches = kube.requests("list", PIPELINERUNS), kube.requests("watch", PIPELINERUNS)
    kube.drop_watches()  # the connection ends without a word: resume from resourceVersion
    wait_for("a new watch", lambda: kube.requests("watch", PIPELINERUNS) > watches)
    set_status(api, second.backend_ref, condition("True", "Succeeded"))
    wait_for("succeeded after drop", lambda: state_of(records, second.id) == "succeeded")
    assert kube.requests("list", PIPELINERUNS) == lists  # no 410 here, so no new list


def test_bad_and_foreign_objects_do_not_stop_the_watch(
    backend: TektonBackend, api: client.ApiClient, records: Records, planned: PlannedBuild
) -> None:
    build = submit(backend, records, planned)
    unknown = new_build(records, planned)
    bad_bodies: list[dict[str, Any]] = [
        {"metadata": {"name": "no-label", "labels": {"a": "b"}}, "status": condition("True", "")},
        {"metadata": {"name": "odd-1", "labels": {BUILD_ID_LABEL: build.id}}, "status": "x"},
        {
            "metadata": {"name": "odd-2", "labels": {BUILD_ID_LABEL: build.id}},
            "status": {"conditions": [{"type": "Succeeded", "status": "True"}], "results": 7},
        },
        {
            "metadata": {"name": "odd-3", "labels": {BUILD_ID_LABEL: "b-not-a-record"}},
            "status": condition("True", "Succeeded"),
        },
    ]
    for body in bad_bodies:
        body = {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "spec": {}, **body}
        body["metadata"]["namespace"] = NS
        custom(api).create_namespaced_custom_object("tekton.dev", "v1", NS, "pipelineruns", body)
    # odd-2 carries our label and a True condition with junk results: succeeded, no results
    wait_for("succeeded", lambda: state_of(records, build.id) == "succeeded")
    assert records.require(build.id).digest is None
    assert state_of(records, unknown.id) == "queued"  # never matched a foreign object

    later = submit(backend, records, planned)
    set_status(api, later.backend_ref, condition("False", "Failed", "boom"))
    wait_for("failed", lambda: state_of(records, later.id) == "failed")


def test_deleting_an_active_run_fails_its_build_and_stop_is_prompt(
    backend: TektonBackend, api: client.ApiClient, records: Records, planned: PlannedBuild
) -> None:
    build = submit(backend, records, planned)
    set_status(api, build.backend_ref, condition("Unknown", "Running"))
    wait_for("running", lambda: state_of(records, build.id) == "running")
    custom(api).delete_namespaced_custom_object(
        "tekton.dev", "v1", NS, "pipelineruns", build.backend_ref
    )
    wait_for("failed", lambda: state_of(records, build.id) == "failed")
    assert "deleted before it finished" in (records.require(build.id).failure or "")

    started = time.monotonic()
    backend.stop()
    assert time.monotonic() - started < 3
    assert backend._thread is None


def test_client_comes_from_the_kubeconfig_with_a_precise_error_when_missing(
    kube: KubeFake,
    tmp_path: Path,
    records: Records,
    config: InstallationConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "nowhere" / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    with pytest.raises(BackendError) as failed:
        TektonBackend(records, config)
    assert failed.value.status == 503 and str(missing) in str(failed.value)

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "svc", "user": {"token": "t0ps3cr3t"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "svc"}}],
                "current-context": "fake",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    backend = TektonBackend(records, config, retries=0)
    try:
        assert backend.server == kube.url
        assert backend.cancel("b-nothing") is False  # a real round trip to the fake API
    finally:
        backend.stop()  # closes the client it made itself
    assert kube.requests("list", PIPELINERUNS) == 1
    assert api_client_from_environment(str(kubeconfig)).configuration.host == kube.url
