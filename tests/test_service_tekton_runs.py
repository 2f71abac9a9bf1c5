"""The Tekton backend against a FAKE Kubernetes API (kmock on loopback): submitting
PipelineRuns, status transitions, results and logs, end states and cancel.

Nothing here needs a cluster: the official ``kubernetes`` client talks HTTP to kmock's
in-memory emulator. The tests drive PipelineRuns the way Tekton would, by patching their
``status`` on the fake, and watch the build records follow.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from kubernetes import client

from ajour_build.plan import PlannedBuild
from ajour_build.service.backends.tekton import (
    TektonBackend,
    run_name,
)
from ajour_build.service.backends.tekton_watch import BUILD_ID_LABEL, outcome
from ajour_build.service.records import Records
from ajour_build.tekton.manifest import SCHEMA_FILES, ManifestValidator, strict_schema
from tests.conftest import vendored
from tests.kube_fake import KubeFake
from tests.tekton_harness import (
    COMMIT,
    DIGEST,
    NS,
    add_taskrun,
    children,
    condition,
    get_run,
    log_lines,
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
