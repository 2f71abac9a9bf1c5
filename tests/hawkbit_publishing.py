"""The fake hawkBit, firmware and publisher the hawkBit publisher tests share."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ajour_build.publish.hawkbit import HawkbitPublisher
from tests.hawkbit_fake import HawkbitFake

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
