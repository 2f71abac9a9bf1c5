"""The hawkBit DDI source against a FAKE DDI server: controller lookups are cached per
controller."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ajour_build.core.fleet import load_fleet
from delivery.device import SimulatedDevice
from delivery.errors import DeliveryError
from delivery.protocol import decode_command, encode_status
from delivery.sources.ddi_client import HawkbitError
from delivery.sources.firmware_source import SourceUnavailable
from delivery.targets import HawkbitSettings, Targets
from delivery.worker import Worker
from tests.clock import Clock
from tests.hawkbit_ddi_fake import HawkbitDdiFake
from tests.hawkbit_ddi_source import FIRMWARE, source_for
from tests.hawkbit_ddi_source import fake as fake  # a fixture

# -- the controller lookups are cached per controller ----------------------------------------


def test_fake_requests_per_status_during_an_update_and_when_synced(
    fake: HawkbitDdiFake, tmp_path: Path
) -> None:
    """A device's whole update, through the worker: hawkBit requests per device status."""
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "f.yaml").write_text(
        "kind: Application\nmetadata: {name: app}\n"
        f"spec: {{firmware: {{hawkbit: {{controller: {fake.controller_id}}}}}}}\n"
        "---\nmetadata: {name: dev1, application: app}\n"
    )
    settings = HawkbitSettings(fake.base_url, fake.tenant, fake.gateway_token, lookup_ttl=60)
    worker = Worker(Targets(load_fleet([fleet]), hawkbit=settings))
    fake.deploy("10.0", FIRMWARE)
    device, statuses = SimulatedDevice(b"0.9", 512), 0
    while not device.synced:
        reply = worker.handle("app", "dev1", encode_status(device.status()))
        assert reply is not None
        device.apply(decode_command(reply))
        statuses += 1
    for _ in range(20):  # synced: the device keeps polling
        worker.handle("app", "dev1", encode_status(device.status()))
        statuses += 1
    requests = len(fake.requests)
    assert device.version == b"10.0" and statuses == 43
    # without the cache: 2 per status + 1 download (87 here); with it, within one TTL:
    assert requests == 3, f"{requests} hawkBit requests for {statuses} statuses"
    assert fake.spec_violations == []


def test_fake_lookup_ttl_is_capped_by_the_polling_sleep_and_errors_drop_it(
    fake: HawkbitDdiFake,
) -> None:
    clock = Clock(1000.0)
    fake.deploy("11.0", FIRMWARE)
    source = source_for(fake, ttl=60.0, clock=clock)  # hawkBit's sleep here: 45 s
    source.target()
    source.target()
    assert fake.count("getControllerBase") == 1
    clock.now += 44
    source.target()
    assert fake.count("getControllerBase") == 1, "within min(ttl, sleep)"
    clock.now += 1
    source.target()
    assert fake.count("getControllerBase") == 2, "the polling sleep caps the TTL"
    assert fake.count("getControllerDeploymentBaseAction") == 2
    assert fake.count("downloadArtifact") == 1
    fake.deploy("11.1", b"the next one")
    assert source.target().version == b"11.0", "within the TTL, the cached lookup is used"
    clock.now += 45
    assert source.target().version == b"11.1"
    # an error drops the lookup: the next status asks again instead of serving the cache
    fake.fail_next("downloadArtifact", 500, "disk full")
    fake.deploy("11.2", b"and another")
    clock.now += 45
    with pytest.raises(HawkbitError, match="disk full"):
        source.target()
    before = fake.count("getControllerBase")
    assert source.target().version == b"11.2"
    assert fake.count("getControllerBase") == before + 1, "no cached lookup after an error"
    fake.fail_next("getControllerBase", 503, "busy")
    clock.now += 45
    with pytest.raises(HawkbitError, match="busy"):
        source.target()
    assert source.target().version == b"11.2" and fake.count("getControllerBase") == before + 3
    assert fake.spec_violations == []


def test_fake_no_deployment_is_cached_and_feedback_drops_the_lookup(
    fake: HawkbitDdiFake,
) -> None:
    clock = Clock(1000.0)
    source = source_for(fake, clock=clock)
    for _ in range(5):
        with pytest.raises(SourceUnavailable, match="no deployment"):
            source.target()
    assert fake.count("getControllerBase") == 1, "'no deployment' is an answer: cached"
    fake.deploy("12.0", FIRMWARE)
    source.invalidate()  # what a publish event does
    assert source.target().version == b"12.0"
    action = source.action_id
    assert action is not None
    source.feedback(action, "success", "closed")
    with pytest.raises(SourceUnavailable, match="no deployment"):
        source.target()  # feedback dropped the lookup: hawkBit is asked, the action is closed
    assert fake.count("getControllerBase") == 3
    uncached = source_for(fake, ttl=0, clock=clock)
    for _ in range(3):
        with pytest.raises(SourceUnavailable):
            uncached.target()
    assert fake.count("getControllerBase") == 6, "ttl=0 turns the cache off"
    with pytest.raises(DeliveryError, match="TTL must be 0 or more"):
        source_for(fake, ttl=-1)


def test_fake_concurrent_statuses_share_one_lookup(fake: HawkbitDdiFake) -> None:
    fake.deploy("13.0", FIRMWARE)
    source = source_for(fake)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _i: source.target().version, range(32)))
    assert versions == [b"13.0"] * 32
    assert fake.count("getControllerBase") == 1
    assert fake.count("downloadArtifact") == 1
