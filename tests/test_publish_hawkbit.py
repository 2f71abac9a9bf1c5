"""The hawkBit publisher, against a fake hawkBit that checks every request against the spec:
the flow, and the fake's own spec check."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from ajour_build.core.errors import PublishError
from ajour_build.publish.hawkbit import HawkbitPublisher
from ajour_build.publish.publisher import FirmwareArtifact, Published
from tests.hawkbit_fake import SPEC_PATH, HawkbitFake
from tests.hawkbit_publishing import (
    ASSIGN,
    DEPLOY,
    MODULES,
    PASSWORD,
    ROLLOUT,
    ROLLOUTS,
    SETS,
    START,
    TOKEN,
    creations,
    publisher,
    sha256,
)
from tests.hawkbit_publishing import fake as fake  # a fixture
from tests.hawkbit_publishing import firmware as firmware  # a fixture

# -- the flow --------------------------------------------------------------------------------


def test_a_rollout_that_stays_creating_ends_at_the_publish_deadline(firmware: Path) -> None:
    with HawkbitFake(password=PASSWORD, rollout_ready_after=10**9) as fake:
        fake.add_target("dev-1")
        options: dict[str, Any] = {"poll_interval": 0.05, "poll_timeout": 600, "deadline": 1.5}
        pub = HawkbitPublisher.from_url(fake.url("sensor-fw", **DEPLOY), fake.env, **options)
        started = time.monotonic()
        with pytest.raises(PublishError) as failed:
            pub.publish(FirmwareArtifact(firmware, "1.2.3"))
    assert time.monotonic() - started < 3  # not the 600 s of polling
    assert "/rollouts/" in str(failed.value)  # it was waiting for the rollout
    assert "did not finish within its 1.5s deadline" in str(failed.value)
    assert fake.spec_violations == [] and fake.crashes == []


def test_publish_to_hawkbit_fake_full_flow_matches_the_spec(firmware: Path) -> None:
    with HawkbitFake(password=PASSWORD, rollout_ready_after=3) as fake:
        fake.add_target("dev-1")
        pub = publisher(fake, **DEPLOY)
        result = pub.publish(FirmwareArtifact(firmware, "1.2.3"))

    assert fake.spec_violations == []
    assert fake.unimplemented == [] and fake.crashes == []
    digest = sha256(firmware)
    [module] = fake.state.modules.values()
    assert (module["name"], module["version"], module["type"]) == ("sensor-fw", "1.2.3", "os")
    [artifact] = fake.state.artifacts[module["id"]]
    assert artifact["providedFilename"] == "sensor.bin"
    assert artifact["hashes"]["sha256"] == digest
    assert fake.state.blobs[artifact["id"]] == firmware.read_bytes()
    [upload] = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/artifacts")]
    assert upload.query["sha256sum"] == [digest]  # the spec declares it as a query parameter
    [ds] = fake.state.distribution_sets.values()
    assert (ds["name"], ds["version"], ds["type"]) == ("sensor-fw", "1.2.3", "os")
    assert [m["id"] for m in ds["modules"]] == [module["id"]]
    assert fake.state.targets["dev-1"] == ds["id"]
    assert len(fake.state.actions) == 1
    [rollout] = fake.state.rollouts.values()
    assert rollout["status"] == "starting"
    assert rollout["distributionSetId"] == ds["id"]
    assert rollout["targetFilterQuery"] == "controllerId==dev-*"
    assert fake.count("GET", ROLLOUT) == 3  # waited for 'creating' -> 'ready' before starting
    assert fake.count("POST", START) == 1
    assert result == Published(
        target=pub.url,
        reference=f"{fake.base_url}/rest/v1/distributionsets/{ds['id']}",
        digest=f"sha256:{digest}",
        version="1.2.3",
    )
    assert result.target.startswith("hawkbit://127.0.0.1:") and "password" not in result.target


def test_publish_to_hawkbit_fake_without_deployment_only_uploads(
    fake: HawkbitFake, firmware: Path
) -> None:
    publisher(fake).publish(FirmwareArtifact(firmware, "2.0"))
    assert fake.spec_violations == []
    assert creations(fake) == [1, 1, 1, 0]
    assert fake.count("POST", ASSIGN) == 0 and fake.state.actions == []


def test_publish_to_hawkbit_fake_with_a_bearer_token(firmware: Path) -> None:
    with HawkbitFake(username=None, token=TOKEN) as fake:
        result = publisher(fake).publish(FirmwareArtifact(firmware, "1.0"))
    assert fake.spec_violations == []
    assert result.digest == f"sha256:{sha256(firmware)}"


def test_republish_to_hawkbit_fake_is_idempotent(fake: HawkbitFake, firmware: Path) -> None:
    first = publisher(fake, **DEPLOY).publish(FirmwareArtifact(firmware, "1.0"))
    before = fake.snapshot()
    second = publisher(fake, **DEPLOY).publish(FirmwareArtifact(firmware, "1.0"))

    assert second == first
    assert fake.spec_violations == []
    assert creations(fake) == [1, 1, 1, 1]
    assert fake.count("POST", START) == 1
    assert fake.snapshot() == before  # nothing changed at all: no duplicate module/artifact/DS
    assert len(fake.state.actions) == 1  # re-assignment was answered "alreadyAssigned"


def test_publish_to_hawkbit_fake_resumes_after_a_failed_run(
    fake: HawkbitFake, firmware: Path
) -> None:
    fake.fail_next(SETS, 500, '{"message": "database is down"}', method="POST")
    with pytest.raises(PublishError, match="HTTP 500"):
        publisher(fake, **DEPLOY).publish(FirmwareArtifact(firmware, "1.0"))
    publisher(fake, **DEPLOY).publish(FirmwareArtifact(firmware, "1.0"))

    assert fake.spec_violations == []
    assert creations(fake) == [1, 1, 2, 1]  # module and artifact were found, not made again
    assert len(fake.state.modules) == len(fake.state.distribution_sets) == 1


@pytest.mark.parametrize("other_name", [False, True], ids=["same-filename", "other-filename"])
def test_publish_to_hawkbit_fake_same_version_different_content_fails(
    fake: HawkbitFake, firmware: Path, other_name: bool
) -> None:
    publisher(fake).publish(FirmwareArtifact(firmware, "1.0"))
    before = fake.snapshot()
    changed = firmware.with_name("sensor-v2.bin") if other_name else firmware
    changed.write_bytes(b"different firmware")

    with pytest.raises(PublishError) as info:
        publisher(fake, **DEPLOY).publish(FirmwareArtifact(changed, "1.0"))

    message = str(info.value)
    assert "version 1.0 already published with different content" in message
    assert "bump the version" in message and sha256(changed) in message
    assert fake.snapshot() == before
    assert creations(fake) == [1, 1, 1, 0]
    assert fake.spec_violations == []


def test_publish_to_hawkbit_fake_refuses_a_set_made_by_someone_else(
    fake: HawkbitFake, firmware: Path
) -> None:
    publisher(fake).publish(FirmwareArtifact(firmware, "1.0"))
    [ds] = fake.state.distribution_sets.values()
    ds["modules"] = []
    with pytest.raises(PublishError, match=r"exists with type 'os' and modules \[\]"):
        publisher(fake).publish(FirmwareArtifact(firmware, "1.0"))


def test_publish_to_hawkbit_fake_unknown_target_fails(fake: HawkbitFake, firmware: Path) -> None:
    with pytest.raises(PublishError, match="target 'dev-404' does not exist"):
        publisher(fake, assign="dev-404").publish(FirmwareArtifact(firmware, "1.0"))
    assert fake.spec_violations == []


def test_publish_to_hawkbit_fake_rollout_name_of_another_set_fails(
    fake: HawkbitFake, firmware: Path
) -> None:
    publisher(fake, **DEPLOY).publish(FirmwareArtifact(firmware, "1.0"))
    with pytest.raises(PublishError, match=r"rollout 'canary' .* already exists for distribution"):
        publisher(fake, **DEPLOY).publish(FirmwareArtifact(firmware, "1.1"))
    assert fake.count("POST", ROLLOUTS) == 1 and fake.count("POST", START) == 1


# -- the fake's spec check ----------------------------------------------------------------------

MODULE = {"name": "x", "version": "1", "type": "os"}
UPLOAD = f"{MODULES}/1/artifacts"
FILE = {"file": ("fw.bin", b"x")}
TEXT = {"Content-Type": "text/plain"}
MALFORMED = [
    ("POST", MODULES, {"json": MODULE}, "not of type 'array'"),
    ("POST", MODULES, {"json": [{"name": "x", "version": "1"}]}, "'type' is a required property"),
    ("POST", MODULES, {"json": [{**MODULE, "verison": "2"}]}, "'verison' was unexpected"),
    ("POST", MODULES, {"data": b"x", "headers": TEXT}, "'text/plain' is not one of"),
    ("POST", ROLLOUTS, {"json": {"name": 5}}, "5 is not of type 'string'"),
    ("GET", MODULES, {"params": {"colour": "red"}}, "'colour' is not declared by getSoftw"),
    ("GET", MODULES, {"params": {"limit": "many"}}, "query limit"),
    ("GET", f"{MODULES}/abc/artifacts", {}, "path parameter softwareModuleId"),
    ("POST", "/rest/v1/softwaremodule", {"json": []}, "no path template in the spec matches"),
    ("PATCH", MODULES, {"json": []}, "PATCH is not declared for /rest/v1/softwaremodules"),
    ("POST", UPLOAD, {"files": {"upload": ("fw.bin", b"x")}}, "'file' is required"),
    ("POST", UPLOAD, {"files": {**FILE, "sha256sum": (None, "ab")}}, "'sha256sum' is not declared"),
    ("POST", UPLOAD, {"files": {"file": (None, b"x")}}, "must be a file part"),
    ("POST", "/rest/v1/rollouts/1/start", {"json": {"now": 1}}, "start declares no request body"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs", "reason"), MALFORMED)
def test_hawkbit_fake_spec_check_rejects_malformed_requests(
    fake: HawkbitFake, method: str, path: str, kwargs: dict[str, Any], reason: str
) -> None:
    auth = ("admin", PASSWORD)
    with requests.request(method, fake.base_url + path, auth=auth, timeout=5, **kwargs) as reply:
        assert reply.status_code == 400
        assert reason in reply.json()["message"]
    [violation] = fake.spec_violations
    assert reason in violation and path.split("?")[0] in violation
    assert fake.state.modules == {} and fake.state.rollouts == {}


def test_hawkbit_fake_accepts_a_well_formed_request(fake: HawkbitFake) -> None:
    body = [{"name": "x", "version": "1", "type": "os"}]
    with requests.post(
        fake.base_url + MODULES, json=body, auth=("admin", PASSWORD), timeout=5
    ) as r:
        assert r.status_code == 201, r.text
    assert fake.spec_violations == []


def test_hawkbit_fake_checks_its_own_responses(fake: HawkbitFake) -> None:
    assert SPEC_PATH.is_file()
    spec = fake.spec
    create = spec.operation("createSoftwareModules")
    good = [{"id": 1, "name": "x", "version": "1", "type": "os"}]
    assert spec.check_response(create, 201, json.dumps(good).encode()) == []
    missing = spec.check_response(create, 201, json.dumps([{"name": "x"}]).encode())
    assert any("'id' is a required property" in problem for problem in missing)
    extra = spec.check_response(create, 201, json.dumps([{**good[0], "colour": 1}]).encode())
    assert "'colour' was unexpected" in extra[0]
    assert "declares no HTTP 418" in spec.check_response(create, 418, b"")[0]
    start = spec.operation("start")
    assert spec.check_response(start, 200, b"") == []
    assert spec.check_response(start, 200, b"{}") == ["start declares no body for HTTP 200"]
