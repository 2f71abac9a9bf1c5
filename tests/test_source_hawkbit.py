"""The hawkBit DDI source against a FAKE DDI server that checks every request against the spec.

``tests/hawkbit_ddi_fake.py`` is not hawkBit: tests using it have "fake" in their names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import urllib.error
import urllib.request
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.errors import DeliveryError
from delivery.sources.ddi_client import HawkbitError
from delivery.sources.firmware_source import SourceUnavailable
from delivery.sources.hawkbit import (
    DEFAULT_POLL_SECONDS,
    MAX_ARTIFACT,
    HawkbitSource,
    format_sleep,
    parse_sleep,
)
from tests.hawkbit_ddi_fake import HawkbitDdiFake
from tests.hawkbit_ddi_source import FIRMWARE, source_for
from tests.hawkbit_ddi_source import fake as fake  # a fixture


def test_fake_full_flow_serves_the_deployment_and_downloads_once(fake: HawkbitDdiFake) -> None:
    deployment = fake.deploy("1.2.3", FIRMWARE)
    source = source_for(fake)
    assert source.poll_seconds == DEFAULT_POLL_SECONDS, "before the first poll"
    first = source.target()
    assert source.poll_seconds == 45
    assert (first.version, first.data) == (b"1.2.3", FIRMWARE)
    assert first.checksum == hashlib.sha256(FIRMWARE).digest()
    assert source.action_id == str(deployment.action_id)
    source.invalidate()
    assert source.target() == first
    assert fake.count("getControllerBase") == 2
    assert fake.count("getControllerDeploymentBaseAction") == 2
    assert fake.count("downloadArtifact") == 1, "the artifact is cached by action"
    fake.deploy("1.2.4", b"next firmware")
    source.invalidate()  # a publish event; without one, the lookup TTL bounds the staleness
    second = source.target()
    assert (second.version, second.data) == (b"1.2.4", b"next firmware")
    assert fake.count("downloadArtifact") == 2, "a new action downloads again"
    assert fake.spec_violations == []
    assert fake.auth_failures == 0


def test_fake_feedback_success_failure_and_none_pass_the_spec_checks(
    fake: HawkbitDdiFake,
) -> None:
    first = fake.deploy("2.0", FIRMWARE)
    source = source_for(fake)
    source.target()
    action = source.action_id
    assert action is not None
    source.feedback(action, "none", "proceeding", ["serving firmware to the device"])
    source.feedback(int(action), "failure", "closed", ["device rejected the image"])
    with pytest.raises(SourceUnavailable, match="no deployment for controller 'device-1'"):
        source.target()  # a closed action is no longer offered
    with pytest.raises(HawkbitError, match="no longer active"):
        source.feedback(action, "success")
    second = fake.deploy("2.1", FIRMWARE)
    source.target()
    source.feedback(str(second.action_id), "success", "closed", [])
    got = [(f["actionId"], f["status"]["result"]["finished"]) for f in fake.feedback]
    assert got == [
        (first.action_id, "none"),
        (first.action_id, "failure"),
        (second.action_id, "success"),
    ]
    assert fake.feedback[0]["status"]["execution"] == "proceeding"
    assert fake.feedback[0]["status"]["details"] == ["serving firmware to the device"]
    assert fake.state.closed == [first.action_id, second.action_id]
    assert fake.spec_violations == []


def test_source_refuses_feedback_values_outside_the_spec() -> None:
    source = HawkbitSource("http://127.0.0.1:9", "T", "dev", "token")
    with pytest.raises(ValueError, match="finished must be one of"):
        source.feedback("1", cast(Any, "ok"))
    with pytest.raises(ValueError, match="execution must be one of"):
        source.feedback("1", "success", cast(Any, "done"))
    with pytest.raises(ValueError, match="action id must be digits"):
        source.feedback("../1", "success")


def _raw(fake: HawkbitDdiFake, method: str, path: str, body: Any = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        fake.base_url + path,
        data,
        {
            "Authorization": f"GatewayToken {fake.gateway_token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_fake_rejects_requests_that_break_the_spec(fake: HawkbitDdiFake) -> None:
    deployment = fake.deploy("3.0", FIRMWARE)
    controller = f"/{fake.tenant}/controller/v1/{fake.controller_id}"
    feedback = f"{controller}/deploymentBase/{deployment.action_id}/feedback"
    bad = {"status": {"execution": "closed", "result": {"finished": "ok"}}}
    assert _raw(fake, "POST", feedback, bad) == 400
    assert "'ok' is not one of ['success', 'failure', 'none']" in fake.spec_violations[-1]
    typo = {"status": {"execution": "closed", "result": {"finished": "none"}, "detail": []}}
    assert _raw(fake, "POST", feedback, typo) == 400
    assert "'detail' was unexpected" in fake.spec_violations[-1]
    assert _raw(fake, "GET", f"{controller}?poll=1") == 400
    assert "query parameter 'poll' is not declared" in fake.spec_violations[-1]
    assert _raw(fake, "DELETE", controller) == 405
    assert _raw(fake, "POST", f"{controller}/deploymentBase/x/feedback", bad) == 400
    assert "path parameter actionId" in fake.spec_violations[-1]
    assert len(fake.spec_violations) == 5
    assert fake.feedback == [], "rejected requests change nothing"


def test_fake_without_deployment_is_unavailable(fake: HawkbitDdiFake) -> None:
    source = source_for(fake)
    with pytest.raises(SourceUnavailable, match=r"no deployment for controller 'device-1'"):
        source.target()
    assert source.poll_seconds == 45, "the polling sleep is read even without a deployment"
    other = HawkbitSource(fake.base_url, fake.tenant, "device-2", fake.gateway_token)
    with pytest.raises(SourceUnavailable, match="no deployment for controller 'device-2'"):
        other.target()
    assert fake.spec_violations == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"advertised_sha256": hashlib.sha256(b"other").hexdigest()}, "has sha256"),
        ({"advertised_size": len(FIRMWARE) + 1}, "bytes but hawkBit says"),
    ],
)
def test_fake_mismatching_artifact_is_refused(
    fake: HawkbitDdiFake, options: dict[str, Any], message: str
) -> None:
    fake.deploy("4.0", FIRMWARE, **options)
    source = source_for(fake)
    for _ in range(2):  # a refused download is not cached
        with pytest.raises(SourceUnavailable, match=f"{message}.*refusing to serve"):
            source.target()
    assert fake.count("downloadArtifact") == 2
    assert fake.spec_violations == []


def test_fake_oversized_artifact_is_refused_before_download(fake: HawkbitDdiFake) -> None:
    fake.deploy("5.0", FIRMWARE, advertised_size=MAX_ARTIFACT + 1)
    with pytest.raises(SourceUnavailable, match="over the 67108864 byte limit"):
        source_for(fake).target()
    assert fake.count("downloadArtifact") == 0
    assert fake.spec_violations == []


def test_fake_wrong_gateway_token_is_reported_without_its_value(
    fake: HawkbitDdiFake, caplog: pytest.LogCaptureFixture
) -> None:
    fake.deploy("6.0", FIRMWARE)
    secret = "wrong-token-s3cr3t-value"
    source = source_for(fake, gateway_token=secret)
    with caplog.at_level(logging.DEBUG), pytest.raises(SourceUnavailable) as caught:
        source.target()
    message = str(caught.value)
    assert "gateway token" in message and "HTTP 401" in message
    assert secret not in message
    assert secret not in repr(source)
    assert secret not in caplog.text
    assert fake.auth_failures == 1
    assert fake.spec_violations == []


@pytest.mark.parametrize(
    ("operation", "status", "body", "message"),
    [
        ("getControllerBase", 500, '{"message": "db down"}', "got HTTP 500, body: .*db down"),
        ("getControllerBase", 200, "<html>login</html>", "JSON object; got HTTP 200.*<html>"),
        ("getControllerBase", 200, "[1, 2]", "JSON object; got HTTP 200"),
        ("getControllerDeploymentBaseAction", 503, "busy", "got HTTP 503, body: 'busy'"),
        ("getControllerDeploymentBaseAction", 200, "x" * 5000, "JSON object"),
        ("getControllerDeploymentBaseAction", 200, '{"id": "7"}', "no list of chunks"),
        ("downloadArtifact", 500, "disk full", "expected HTTP 200 with artifact 'firmware.bin'"),
        ("getControllerBase", 302, "", "redirects are not followed"),
    ],
)
def test_fake_server_failures_are_unavailable(
    fake: HawkbitDdiFake, operation: str, status: int, body: str, message: str
) -> None:
    fake.deploy("7.0", FIRMWARE)
    fake.fail_next(operation, status, body)
    source = source_for(fake)
    with pytest.raises(SourceUnavailable, match=message) as caught:
        source.target()
    assert "x" * 201 not in str(caught.value), "bodies are cut to 200 characters"
    assert source.target().version == b"7.0", "the next poll recovers"
    assert fake.spec_violations == []


def test_fake_bad_polling_sleep_is_an_error(fake: HawkbitDdiFake) -> None:
    fake.sleep = "5 minutes"
    with pytest.raises(HawkbitError, match=r"'5 minutes' is not HH:MM:SS"):
        source_for(fake).target()
    assert len(fake.spec_violations) == 1, "the fake knows it answered off-spec"
    assert "/config/polling/sleep" in fake.spec_violations[0]


def test_fake_missing_polling_sleep_falls_back_to_300(fake: HawkbitDdiFake) -> None:
    fake.sleep = None
    fake.deploy("8.0", FIRMWARE)
    source = source_for(fake)
    source.target()
    assert source.poll_seconds == 300
    assert fake.spec_violations == []


def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = HawkbitSource(f"http://127.0.0.1:{port}", "T", "dev", "token", timeout=2)
    with pytest.raises(SourceUnavailable, match=r"GET http://127\.0\.0\.1:\d+/T/.* failed"):
        source.target()


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("http://hawkbit.example.com", {}, "refusing plain http to 'hawkbit.example.com'"),
        ("ftp://hawkbit.example.com", {}, "expected http"),
        ("https://user:pw@hawkbit.example.com", {}, "without credentials"),
        ("https://hawkbit.example.com?x=1", {}, "no query"),
        ("https://hawkbit.example.com", {"timeout": 0}, "timeout must be positive"),
    ],
)
def test_source_configuration_is_checked(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(DeliveryError, match=message):
        HawkbitSource(url, "T", "dev", "token", **options)


def test_source_builds_ddi_urls() -> None:
    source = HawkbitSource("http://hawkbit.example.com/prefix/", "T", "dev 1", "t", insecure=True)
    assert source.controller_url == "http://hawkbit.example.com/prefix/T/controller/v1/dev%201"
    with pytest.raises(DeliveryError, match="control chars"):
        HawkbitSource("https://hawkbit.example.com", "T", "dev", "t\r\nX-Evil: 1")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0:05:00",
        "00:5:00",
        "00:60:00",
        "24:00:00",
        "00:05:00\n",
        "00:00:00",
        "\u0660\u0660:\u0660\u0665:\u0660\u0660",
    ],
)
def test_parse_sleep_is_strict(text: str) -> None:
    with pytest.raises(HawkbitError):
        parse_sleep(text)


@given(st.integers(min_value=1, max_value=24 * 3600 - 1))
def test_sleep_round_trips_through_the_formatter(seconds: int) -> None:
    text = format_sleep(seconds)
    assert parse_sleep(text) == seconds
    assert format_sleep(parse_sleep(text)) == text


@given(st.from_regex(r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]", fullmatch=True))
def test_every_valid_sleep_string_round_trips(text: str) -> None:
    if text == "00:00:00":
        with pytest.raises(HawkbitError, match="zero"):
            parse_sleep(text)
        return
    assert format_sleep(parse_sleep(text)) == text


@given(st.text(max_size=20) | st.from_regex(r"[0-9:]{0,10}", fullmatch=True))
def test_parse_sleep_raises_only_its_own_error(text: str) -> None:
    try:
        seconds = parse_sleep(text)
    except HawkbitError:
        return
    assert 0 < seconds < 24 * 3600
    assert format_sleep(seconds) == text
