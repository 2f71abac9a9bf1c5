"""The FAKE DDI server fixture and a hawkBit source pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from delivery.sources.hawkbit import HawkbitSource
from tests.hawkbit_ddi_fake import HawkbitDdiFake

FIRMWARE = bytes(range(256)) * 40 + b"tail"


@pytest.fixture
def fake() -> Iterator[HawkbitDdiFake]:
    with HawkbitDdiFake(sleep="00:00:45") as server:
        yield server
    assert server.crashes == []


def source_for(fake: HawkbitDdiFake, **options: Any) -> HawkbitSource:
    settings = {"gateway_token": fake.gateway_token, "timeout": 5.0, **options}
    return HawkbitSource(fake.base_url, fake.tenant, fake.controller_id, **settings)
