"""The hawkBit publisher, against a fake hawkBit that checks every request against the spec."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ajour_build.core.errors import PublishError
from ajour_build.publish.hawkbit import HawkbitPublisher, Rollout
from ajour_build.publish.hawkbit_auth import HawkbitAuth
from ajour_build.publish.publisher import FirmwareArtifact, Published
from tests.hawkbit_fake import SPEC_PATH, HawkbitFake

MODULES = "/rest/v1/softwaremodules"
ARTIFACTS = "/rest/v1/softwaremodules/{softwareModuleId}/artifacts"
SETS = "/rest/v1/distributionsets"
ASSIGN = "/rest/v1/distributionsets/{distributionSetId}/assignedTargets"
ROLLOUTS = "/rest/v1/rollouts"
ROLLOUT = "/rest/v1/rollouts/{rolloutId}"
START = "/rest/v1/rollouts/{rolloutId}/start"
CREATES = [("POST", MODULES), ("POST", ARTIFACTS), ("POST", SETS), ("POST", ROLLOUTS)]
PASSWORD = "fake-admin-password"
TOKEN = "fake-bearer-token-0123456789"
DEPLOY = {"assign": "dev-1", "rollout": "canary", "filter": "controllerId==dev-*"}


@pytest.fixture
def fake() -> Iterator[HawkbitFake]:
    with HawkbitFake(password=PASSWORD) as server:
        server.add_target("dev-1")
        yield server
        assert server.crashes == [], "the fake itself crashed"


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "sensor.bin"
    # CR/LF and boundary-like bytes: the multipart path must keep them exactly.
    path.write_bytes(b"\x7fELF\r\n\n--boundary\r\n\x00\xff" * 300)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publisher(
    fake: HawkbitFake, env: dict[str, str] | None = None, /, **query: str
) -> HawkbitPublisher:
    url = fake.url("sensor-fw", **query)
    options: dict[str, Any] = {"backoff": 0.001, "poll_interval": 0.001, "timeout": 5}
    return HawkbitPublisher.from_url(url, fake.env if env is None else env, **options)


def creations(fake: HawkbitFake) -> list[int]:
    return [fake.count(method, template) for method, template in CREATES]


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


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
def test_publish_to_hawkbit_fake_5xx_on_post_is_not_retried(
    fake: HawkbitFake, firmware: Path, status: int
) -> None:
    body = "<h1>Internal Server Error</h1>" + "x" * 170 + "BEYOND-200" + "y" * 50
    fake.fail_next(MODULES, status, body, method="POST", content_type="text/html")
    with pytest.raises(PublishError) as info:
        publisher(fake).publish(FirmwareArtifact(firmware, "1.0"))
    message = str(info.value)
    assert f"POST {fake.base_url}{MODULES}: expected HTTP 201; got HTTP {status}" in message
    assert "<h1>Internal Server Error</h1>xxx" in message and "BEYOND-200" not in message
    assert fake.count("POST", MODULES) == 1


def test_publish_to_hawkbit_fake_dropped_post_is_not_retried(
    fake: HawkbitFake, firmware: Path
) -> None:
    fake.fail_next(MODULES, None, method="POST")
    with pytest.raises(PublishError, match="not retried: not idempotent"):
        publisher(fake).publish(FirmwareArtifact(firmware, "1.0"))
    assert fake.count("POST", MODULES) == 1


@pytest.mark.parametrize("status", [502, 503, 504, 429, None])
def test_publish_to_hawkbit_fake_retries_get(
    fake: HawkbitFake, firmware: Path, status: int | None
) -> None:
    fake.fail_next(MODULES, status, "busy", method="GET", times=2)
    publisher(fake).publish(FirmwareArtifact(firmware, "1.0"))
    assert fake.count("GET", MODULES) == 3
    assert creations(fake) == [1, 1, 1, 0]
    assert fake.spec_violations == []


def test_publish_to_hawkbit_fake_gives_up_after_the_retries(
    fake: HawkbitFake, firmware: Path
) -> None:
    fake.fail_next(MODULES, 503, "try later", method="GET", times=10)
    pub = HawkbitPublisher(
        fake.base_url, "fw", auth=HawkbitAuth("admin", PASSWORD), retries=2, backoff=0.001
    )
    with pytest.raises(PublishError, match="expected HTTP 200; got HTTP 503, body: 'try later'"):
        pub.publish(FirmwareArtifact(firmware, "1.0"))
    assert fake.count("GET", MODULES) == 3


UNEXPECTED = [
    (MODULES, "GET", 200, "<html><body>Login</body></html>", "expected a JSON dict"),
    (MODULES, "GET", 200, '{"items": []}', "expected a page with a 'content' list"),
    (MODULES, "POST", 201, '[{"name": "sensor-fw"}]', "integer 'id'"),
    (MODULES, "POST", 201, '{"id": 1, "name": "sensor-fw"}', "expected a JSON list"),
    (MODULES, "POST", 201, '[{"id": "1", "name": "sensor-fw"}]', "integer 'id'"),
    (SETS, "POST", 201, "[]", "a list with the one created entity"),
    ("/rest/v1/distributionsets/", "POST", 200, "{}", "'assigned' and 'alreadyAssigned'"),
    (f"{MODULES}/", "POST", 201, '{"id": 9, "hashes": {"sha256": "00"}}', "sha256 to be"),
]


@pytest.mark.parametrize(("prefix", "method", "status", "body", "expected"), UNEXPECTED)
def test_publish_to_hawkbit_fake_unexpected_body_fails(
    fake: HawkbitFake,
    firmware: Path,
    prefix: str,
    method: str,
    status: int,
    body: str,
    expected: str,
) -> None:
    fake.fail_next(prefix, status, body, method=method)
    with pytest.raises(PublishError) as info:
        publisher(fake, assign="dev-1").publish(FirmwareArtifact(firmware, "1.0"))
    message = str(info.value)
    assert expected in message
    assert f"got HTTP {status}, body: {body[:200]!r}" in message


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_publish_to_hawkbit_fake_bad_credentials_never_leak(
    firmware: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    secret = "wrong-secret-Zq81x"
    if mode == "basic":
        env = {"AJOUR_HAWKBIT_USERNAME": "admin", "AJOUR_HAWKBIT_PASSWORD": secret}
    else:
        env = {"AJOUR_HAWKBIT_TOKEN": secret}
    caplog.set_level(logging.DEBUG)
    with HawkbitFake(password=PASSWORD, token=TOKEN) as fake:
        pub = publisher(fake, env)
        with pytest.raises(PublishError) as info:
            pub.publish(FirmwareArtifact(firmware, "1.0"))
    message = str(info.value)
    assert "HTTP 401" in message
    assert "AJOUR_HAWKBIT_USERNAME" in message and "AJOUR_HAWKBIT_TOKEN" in message
    assert fake.count("GET", MODULES) == 1  # 401 is not retried
    for text in (message, repr(info.value), repr(pub), repr(pub.auth), caplog.text, pub.url):
        assert secret not in text


def test_publish_to_hawkbit_fake_success_never_logs_credentials(
    fake: HawkbitFake, firmware: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pub = publisher(fake, **DEPLOY)
    result = pub.publish(FirmwareArtifact(firmware, "1.0"))
    assert "created software module sensor-fw:1.0" in caplog.text  # logging did happen
    for text in (caplog.text, repr(pub), repr(result)):
        assert PASSWORD not in text


def test_publish_to_hawkbit_fake_403_names_permissions(fake: HawkbitFake, firmware: Path) -> None:
    fake.fail_next(MODULES, 403, '{"message": "forbidden"}', method="POST")
    with pytest.raises(PublishError) as info:
        publisher(fake).publish(FirmwareArtifact(firmware, "1.0"))
    message = str(info.value)
    assert "HTTP 403" in message and "CREATE_REPOSITORY" in message and "forbidden" in message
    assert "AJOUR_HAWKBIT_USERNAME" in message and PASSWORD not in message
    assert fake.count("POST", MODULES) == 1


def test_publish_to_stopped_hawkbit_fake_fails_after_retries(firmware: Path) -> None:
    with HawkbitFake() as fake:
        url = fake.base_url
    pub = HawkbitPublisher(url, "fw", auth=HawkbitAuth(token=TOKEN), retries=1, backoff=0.001)
    with pytest.raises(PublishError, match="failed \\(after 2 attempts\\): ConnectionError"):
        pub.publish(FirmwareArtifact(firmware, "1.0"))


# -- checks before any request ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("1 0", "no spaces"),
        ("", "not publishable"),
        ("v" * 65, "hawkBit allows at most 64"),
    ],
)
def test_publish_to_hawkbit_fake_bad_version_fails_before_any_request(
    fake: HawkbitFake, firmware: Path, version: str, reason: str
) -> None:
    with pytest.raises(PublishError, match=reason):
        publisher(fake, **DEPLOY).publish(FirmwareArtifact(firmware, version))
    assert fake.requests == [] and sum(fake.calls.values()) == 0


def test_publish_to_hawkbit_fake_missing_file_fails_before_any_request(
    fake: HawkbitFake, tmp_path: Path
) -> None:
    with pytest.raises(PublishError, match="does not exist"):
        publisher(fake).publish(FirmwareArtifact(tmp_path / "nope.bin", "1.0"))
    assert fake.requests == []


# -- from_url ---------------------------------------------------------------------------------

ENV = {"AJOUR_HAWKBIT_USERNAME": "ci", "AJOUR_HAWKBIT_PASSWORD": "pw-Xy7"}


def test_from_url_rejects_credentials_in_the_url() -> None:
    with pytest.raises(PublishError) as info:
        HawkbitPublisher.from_url("hawkbit://admin:hunter2-secret@hawkbit.example.com/fw", ENV)
    message = str(info.value)
    assert "credentials in the hawkbit:// URL are not allowed" in message
    assert "AJOUR_HAWKBIT_USERNAME" in message and "AJOUR_HAWKBIT_TOKEN" in message
    assert "hunter2-secret" not in message and "admin" not in message


def test_http_to_a_non_loopback_host_needs_insecure() -> None:
    auth = HawkbitAuth(token=TOKEN)
    with pytest.raises(PublishError, match=r"refusing plain http to 'hawkbit\.example\.com'"):
        HawkbitPublisher("http://hawkbit.example.com", "fw", auth=auth)
    with pytest.raises(PublishError, match="expected hawkbit://host"):
        HawkbitPublisher.from_url("http://hawkbit.example.com/fw", ENV)
    plain = HawkbitPublisher.from_url("hawkbit://hawkbit.example.com/fw?insecure=1", ENV)
    assert plain.base_url == "http://hawkbit.example.com" and plain.url.endswith("?insecure=1")
    secure = HawkbitPublisher.from_url("hawkbit://hawkbit.example.com:8443/fw?insecure=0", ENV)
    assert secure.base_url == "https://hawkbit.example.com:8443"


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("hawkbit://127.0.0.1:8080/fw", "http://127.0.0.1:8080"),
        ("hawkbit://127.9.9.9/fw", "http://127.9.9.9"),
        ("hawkbit://localhost:8080/fw", "http://localhost:8080"),
        ("hawkbit://[::1]:8080/fw", "http://[::1]:8080"),
        ("hawkbit://[2001:db8::1]:8443/fw", "https://[2001:db8::1]:8443"),
        ("hawkbit://128.0.0.1/fw", "https://128.0.0.1"),
    ],
)
def test_from_url_uses_plain_http_only_for_loopback(url: str, base: str) -> None:
    assert HawkbitPublisher.from_url(url, ENV).base_url == base


def test_from_url_reads_every_parameter_and_round_trips() -> None:
    url = (
        "hawkbit://hawkbit.example.com/sensor-fw?assign=dev-1&rollout=wave-1"
        "&filter=controllerId==dev-*;attribute.board==rev%20b&type=application&ds-type=app"
    )
    pub = HawkbitPublisher.from_url(url, ENV)
    assert pub.base_url == "https://hawkbit.example.com"
    assert (pub.module, pub.module_type, pub.ds_type) == ("sensor-fw", "application", "app")
    assert pub.assign_target == "dev-1"
    assert pub.rollout == Rollout("wave-1", "controllerId==dev-*;attribute.board==rev b")
    assert pub.auth == HawkbitAuth("ci", "pw-Xy7")
    again = HawkbitPublisher.from_url(pub.url, ENV)
    assert vars(again) == vars(pub)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("hawkbit://h.example.com/fw?colour=red", "unknown parameter 'colour'"),
        ("hawkbit://h.example.com/fw?assign=a&assign=b", "repeated parameter 'assign'"),
        ("hawkbit://h.example.com/fw?rollout=r", "go together"),
        ("hawkbit://h.example.com/fw?filter=x==y", "go together"),
        ("hawkbit://h.example.com/a/b", "one path segment"),
        ("hawkbit://h.example.com/", "one path segment"),
        ("hawkbit://h.example.com/fw?insecure=yes", "insecure must be 1 or 0"),
        ("hawkbit://h.example.com:99999/fw", "bad port"),
        ("hawkbit://h.example.com/my%20fw", "module 'my%20fw' is not allowed"),
        ("hawkbit://h.example.com/fw?rollout=a%20b&filter=x==y", "rollout 'a b'"),
        ("hawkbit:///fw", "expected hawkbit://host"),
    ],
)
def test_from_url_rejects_bad_urls(url: str, reason: str) -> None:
    with pytest.raises(PublishError, match=reason):
        HawkbitPublisher.from_url(url, ENV)


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, "no hawkBit credentials"),
        ({**ENV, "AJOUR_HAWKBIT_TOKEN": "t"}, "got both a username/password and a token"),
        ({"AJOUR_HAWKBIT_USERNAME": "ci"}, "needs both AJOUR_HAWKBIT_USERNAME and"),
    ],
)
def test_from_url_rejects_bad_credential_env(env: dict[str, str], reason: str) -> None:
    with pytest.raises(PublishError, match=reason):
        HawkbitPublisher.from_url("hawkbit://h.example.com/fw", env)
