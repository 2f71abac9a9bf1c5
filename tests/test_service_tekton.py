"""The Tekton backend against a FAKE Kubernetes API (kmock on loopback, see tests/kube_fake.py).

Nothing here needs a cluster: the official ``kubernetes`` client talks HTTP to kmock's
in-memory emulator. The tests drive PipelineRuns the way Tekton would, by patching their
``status`` on the fake, and watch the build records follow.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
from kubernetes import client

from ajour_build.config import InstallationConfig, load_config
from ajour_build.core.fleet import load_fleet
from ajour_build.lifecycle import Build
from ajour_build.plan import PlannedBuild, plan_builds
from ajour_build.service.backends.backend import BackendError
from ajour_build.service.backends.tekton import (
    TektonBackend,
    api_client_from_environment,
    run_name,
)
from ajour_build.service.backends.tekton_watch import BUILD_ID_LABEL, outcome
from ajour_build.service.records import Records
from ajour_build.tekton.manifest import SCHEMA_FILES, ManifestValidator, strict_schema
from tests.conftest import APP, CONFIG_YAML, vendored
from tests.kube_fake import PIPELINERUNS, KubeFake
from tests.stall import silent

Write = Callable[[str, str], Path]
NS = "builds"  # CONFIG_YAML's namespace
DIGEST = "sha256:" + "ab" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# -- fixtures and helpers -------------------------------------------------------------------
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


# -- 1. submit ------------------------------------------------------------------------------
def test_submit_creates_a_schema_valid_pipelinerun_per_build(
    backend: TektonBackend, api: client.ApiClient, records: Records, planned: PlannedBuild
) -> None:
    first = submit(backend, records, planned, version="1.2.3")
    second = submit(backend, records, planned)

    assert first.backend_ref and second.backend_ref
    assert first.backend_ref != second.backend_ref  # one PipelineRun per build
    schema_file = vendored(f"ajour_build/schemas/tekton/{SCHEMA_FILES['PipelineRun']}")
    schema = json.loads(schema_file.read_text())
    reference = jsonschema.Draft7Validator(strict_schema(schema))
    for build in (first, second):
        name = build.backend_ref
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
        assert name.startswith(planned.name[:40])
        run = get_run(api, name)  # fetched back from the fake API
        assert [e.message for e in reference.iter_errors(run)] == []
        assert ManifestValidator().problems(run) == []
        assert run["metadata"]["namespace"] == NS
        assert run["metadata"]["labels"][BUILD_ID_LABEL] == build.id
        assert run["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ajour-build"

    params = {p["name"]: p["value"] for p in get_run(api, first.backend_ref)["spec"]["params"]}
    assert params["firmware-version"] == "1.2.3"
    assert params["publish-to"] == planned.publish_to
    params = {p["name"]: p["value"] for p in get_run(api, second.backend_ref)["spec"]["params"]}
    assert "firmware-version" not in params  # the pipeline's default: the builder's rule


def test_run_names_stay_legal_for_long_applications() -> None:
    long = "ajour-" + "a" * 40 + "-0123456789ab"  # the longest planned name (59)
    names = {run_name(long, f"b-20260101000000-{i:08x}") for i in range(50)}
    assert len(names) == 50
    for name in names:
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert run_name(long, "b-1") == run_name(long, "b-1")  # fixed per build: retries are safe


# -- 2. status transitions, results and logs ------------------------------------------------
def test_running_then_succeeded_records_results_and_step_logs(
    backend: TektonBackend,
    api: client.ApiClient,
    kube: KubeFake,
    records: Records,
    planned: PlannedBuild,
) -> None:
    build = submit(backend, records, planned)
    name = build.backend_ref
    assert state_of(records, build.id) == "queued"

    set_status(api, name, condition("Unknown", "Running", "Tasks Completed: 0"))
    wait_for("running", lambda: state_of(records, build.id) == "running")
    assert records.require(build.id).started is not None

    add_taskrun(api, f"{name}-clone", ["clone"], {"commit": COMMIT, "version": "2.0.0"})
    add_taskrun(api, f"{name}-publish", ["publish"])
    kube.pod_log(NS, f"{name}-clone-pod", "step-clone", "Cloning into /workspace\nHEAD is x\n")
    kube.pod_log(NS, f"{name}-publish-pod", "step-publish", "pushed firmware\n")
    status = condition("True", "Succeeded", "Tasks Completed: 2")
    status["results"] = [
        {"name": "IMAGE_URL", "value": "registry.example.com/fw/app1:latest"},
        {"name": "IMAGE_DIGEST", "value": DIGEST},
        {"name": "CHAINS-GIT_COMMIT", "value": COMMIT},
    ]
    status["childReferences"] = children(("clone", f"{name}-clone"), ("publish", f"{name}-publish"))
    set_status(api, name, status)

    wait_for("succeeded", lambda: state_of(records, build.id) == "succeeded")
    done = records.require(build.id)
    assert done.digest == DIGEST
    assert done.reference == "registry.example.com/fw/app1:latest"
    assert done.commit == COMMIT
    assert done.version == "2.0.0"  # the clone task's result, as the build had none
    assert done.failure is None and done.finished is not None
    assert log_lines(records, build.id) == [
        "[clone/clone] Cloning into /workspace",
        "[clone/clone] HEAD is x",
        "[publish/publish] pushed firmware",
    ]


def test_results_fall_back_to_taskruns_and_missing_logs_are_a_note(
    backend: TektonBackend, api: client.ApiClient, records: Records, planned: PlannedBuild
) -> None:
    build = submit(backend, records, planned, version="9.9")
    name = build.backend_ref
    add_taskrun(api, f"{name}-clone", ["clone"], {"commit": COMMIT, "version": "2.0.0"})
    publish = {"IMAGE_URL": "registry.example.com/fw/app1:latest", "IMAGE_DIGEST": DIGEST}
    add_taskrun(api, f"{name}-publish", ["publish"], publish)
    status = condition("True", "Succeeded")
    status["childReferences"] = children(
        ("clone", f"{name}-clone"), ("publish", f"{name}-publish"), ("gone", f"{name}-gone")
    )
    set_status(api, name, status)  # no pod logs were served and one TaskRun is missing

    wait_for("succeeded", lambda: state_of(records, build.id) == "succeeded")
    done = records.require(build.id)
    assert (done.digest, done.commit) == (DIGEST, COMMIT)
    assert done.reference == "registry.example.com/fw/app1:latest"
    assert done.version == "9.9"  # the requested version is kept
    lines = log_lines(records, build.id)
    assert len(lines) == 3
    assert lines[0].startswith("[clone/clone] (log unavailable: pod ")
    assert "HTTP 404" in lines[0]
    assert lines[2].startswith("[gone] (log unavailable: TaskRun ")


# -- 3. end states and cancel ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "reason", "state", "failure"),
    [
        ("Unknown", "PipelineRunPending", "queued", None),
        ("Unknown", "Running", "running", None),
        ("True", "Succeeded", "succeeded", None),
        ("False", "Cancelled", "cancelled", "cancelled (Cancelled): stop"),
        ("False", "CancelledRunFinally", "cancelled", "cancelled (CancelledRunFinally): stop"),
        ("False", "StoppedRunFinally", "cancelled", "cancelled (StoppedRunFinally): stop"),
        ("False", "PipelineRunTimeout", "failed", "timed out after 45m0s: stop"),
        ("False", "Failed", "failed", "Failed: stop"),
    ],
)
def test_conditions_map_to_states(
    status: str, reason: str, state: str, failure: str | None
) -> None:
    run = {"spec": {"timeouts": {"pipeline": "45m0s"}}, "status": condition(status, reason, "stop")}
    found = outcome(run)
    assert found is not None and (found.state, found.failure) == (state, failure)


@pytest.mark.parametrize(
    "weird",
    [None, {}, {"status": "x"}, {"status": {"conditions": "x"}}, condition("Maybe", "Who")],
)
def test_objects_without_a_usable_condition_map_to_nothing(weird: Any) -> None:
    assert outcome(weird) is None


def test_cancelled_and_timed_out_runs_end_their_builds(
    backend: TektonBackend, api: client.ApiClient, records: Records, planned: PlannedBuild
) -> None:
    cancelled = submit(backend, records, planned)
    timed_out = submit(backend, records, planned)
    failed = submit(backend, records, planned)
    set_status(api, cancelled.backend_ref, condition("False", "Cancelled", "cancelled by user"))
    message = f'PipelineRun "{timed_out.backend_ref}" failed to finish within "45m0s"'
    set_status(api, timed_out.backend_ref, condition("False", "PipelineRunTimeout", message))
    set_status(api, failed.backend_ref, condition("False", "Failed", "Tasks Completed: 1"))

    wait_for("cancelled", lambda: state_of(records, cancelled.id) == "cancelled")
    wait_for("timed out", lambda: state_of(records, timed_out.id) == "failed")
    wait_for("failed", lambda: state_of(records, failed.id) == "failed")
    assert "cancelled by user" in (records.require(cancelled.id).failure or "")
    failure = records.require(timed_out.id).failure or ""
    assert failure.startswith("timed out after 45m0s") and "failed to finish" in failure
    assert records.require(failed.id).failure == "Failed: Tasks Completed: 1"


def test_cancel_patches_spec_status(
    backend: TektonBackend, api: client.ApiClient, records: Records, planned: PlannedBuild
) -> None:
    build = submit(backend, records, planned)
    assert "status" not in get_run(api, build.backend_ref)["spec"]
    assert backend.cancel(build.id) is True
    assert get_run(api, build.backend_ref)["spec"]["status"] == "Cancelled"
    assert backend.cancel("b-unknown") is False
    assert state_of(records, build.id) == "queued"  # the watch ends it when Tekton says so

    set_status(api, build.backend_ref, condition("False", "Cancelled", "PipelineRun cancelled"))
    wait_for("cancelled", lambda: state_of(records, build.id) == "cancelled")


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
