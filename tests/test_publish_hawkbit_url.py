"""The hawkBit publisher's ``from_url``: URLs and credentials from the environment."""

from __future__ import annotations

import pytest

from ajour_build.core.errors import PublishError
from ajour_build.publish.hawkbit import HawkbitPublisher, Rollout
from ajour_build.publish.hawkbit_auth import HawkbitAuth
from tests.hawkbit_publishing import TOKEN

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
