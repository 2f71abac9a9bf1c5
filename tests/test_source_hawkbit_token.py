"""The hawkBit DDI source against a FAKE DDI server: the gateway token stays on the hawkBit
origin (artifact links, redirects)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from delivery.sources.ddi_client import HawkbitError
from tests.hawkbit_ddi_fake import HawkbitDdiFake
from tests.hawkbit_ddi_source import FIRMWARE, source_for
from tests.hawkbit_ddi_source import fake as fake  # a fixture
from tests.loopback_http import Answer, Seen, serve

# -- the gateway token stays on the hawkBit origin -------------------------------------------


def cdn_for(artifacts: dict[str, bytes]) -> Any:
    """A CDN/file server: serves ``artifacts`` by path, fails a request carrying a token."""

    def answer(seen: Seen) -> Answer:
        if "authorization" in seen.headers:
            return 400, {}, b"Authorization header not allowed here"
        data = artifacts.get(seen.path.split("?", 1)[0])
        return (200, {}, data) if data is not None else (404, {}, b"no such object")

    return answer


def artifact_path(fake: HawkbitDdiFake, deployment: Any) -> str:
    return (
        f"/{fake.tenant}/controller/v1/{fake.controller_id}/softwaremodules/"
        f"{deployment.module_id}/artifacts/{deployment.filename}"
    )


def test_fake_artifact_link_on_another_origin_is_fetched_without_the_token(
    fake: HawkbitDdiFake, caplog: pytest.LogCaptureFixture
) -> None:
    files: dict[str, bytes] = {}
    with serve(cdn_for(files)) as cdn:
        deployment = fake.deploy("9.0", FIRMWARE, download_base=cdn.url)
        files[artifact_path(fake, deployment)] = FIRMWARE
        with caplog.at_level(logging.DEBUG):
            target = source_for(fake).target()
    assert target.data == FIRMWARE
    assert len(cdn.seen) == 1
    assert cdn.headers_named("Authorization") == [], "the gateway token never left hawkBit"
    assert fake.count("downloadArtifact") == 0 and fake.auth_failures == 0
    assert fake.gateway_token not in caplog.text
    assert fake.spec_violations == []


def test_fake_download_redirects_are_followed_but_never_with_the_token(
    fake: HawkbitDdiFake,
) -> None:
    deployment = fake.deploy("9.1", FIRMWARE)
    files: dict[str, bytes] = {}
    with serve(cdn_for(files)) as cdn:
        files["/bucket/fw.bin"] = FIRMWARE
        location = {"Location": f"{cdn.url}/bucket/fw.bin?X-Amz-Signature=s3cr3t-sig"}
        fake.fail_next("downloadArtifact", 302, "", headers=location)
        assert source_for(fake).target().data == FIRMWARE
        assert cdn.headers_named("Authorization") == []
        # a redirect back to hawkBit itself does not get the token either
        fake.deploy("9.2", FIRMWARE)
        back = {"Location": fake.base_url + artifact_path(fake, deployment)}
        fake.fail_next("downloadArtifact", 307, "", headers=back)
        with pytest.raises(HawkbitError) as caught:
            source_for(fake).target()
    message = str(caught.value)
    assert "HTTP 401" in message and "after 1 redirect(s)" in message
    assert "so the gateway token was not sent" in message
    assert fake.auth_failures == 1, "the redirected request came without the token"
    assert fake.spec_violations == []


def test_fake_download_redirect_loops_and_downgrades_are_refused(fake: HawkbitDdiFake) -> None:
    fake.deploy("9.3", FIRMWARE)
    with serve(lambda s: (302, {"Location": s.path + "x"}, b"")) as loop:
        fake.fail_next("downloadArtifact", 302, "", headers={"Location": loop.url + "/r"})
        with pytest.raises(HawkbitError, match="more than 5 redirects"):
            source_for(fake).target()
    assert len(loop.seen) == 5
    fake.fail_next(
        "downloadArtifact", 302, "", headers={"Location": "http://cdn.example.invalid/fw?sig=1"}
    )
    with pytest.raises(HawkbitError, match=r"refusing plain http to 'cdn\.example\.invalid'") as e:
        source_for(fake).target()
    assert "sig=1" not in str(e.value), "a presigned URL's query is not shown"


def test_fake_plain_http_artifact_link_off_loopback_is_refused(fake: HawkbitDdiFake) -> None:
    fake.deploy("9.4", FIRMWARE, download_base="http://cdn.example.invalid")
    with pytest.raises(HawkbitError, match=r"refusing plain http to 'cdn\.example\.invalid'"):
        source_for(fake).target()


def test_fake_deployment_link_on_another_origin_is_refused(fake: HawkbitDdiFake) -> None:
    fake.deploy("9.5", FIRMWARE)
    with serve(lambda _s: (200, {"Content-Type": "application/json"}, b"{}")) as other:
        fake.link_base = other.url  # e.g. hawkBit behind a proxy with another public host
        with pytest.raises(HawkbitError) as caught:
            source_for(fake).target()
    message = str(caught.value)
    assert f"not on the configured hawkBit origin {fake.base_url}" in message
    assert "configure it as --hawkbit-url" in message
    assert other.seen == [], "the token was not sent to the other origin"
    assert fake.gateway_token not in message
