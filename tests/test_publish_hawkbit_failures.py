"""The hawkBit publisher against a fake hawkBit: failures, retries, credentials, and the
checks before any request."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ajour_build.core.errors import PublishError
from ajour_build.publish.hawkbit import HawkbitPublisher
from ajour_build.publish.hawkbit_auth import HawkbitAuth
from ajour_build.publish.publisher import FirmwareArtifact
from tests.hawkbit_fake import HawkbitFake
from tests.hawkbit_publishing import (
    DEPLOY,
    MODULES,
    PASSWORD,
    SETS,
    TOKEN,
    creations,
    publisher,
)
from tests.hawkbit_publishing import fake as fake  # a fixture
from tests.hawkbit_publishing import firmware as firmware  # a fixture

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
