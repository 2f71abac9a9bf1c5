"""The delivery decision (contract 4): example tests per rule, and properties with a device model.

Contract 4 is in docs/architecture.md.

``SimulatedDevice`` mirrors embedded-update's updater loop, checked more strictly than a real
device would: a ``Write`` must either restart at 0 or continue exactly where the device
stands, so the model also proves that ``decide()`` never leaves a gap in the image.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.decision import (
    DEFAULT_POLICY,
    FirmwareImage,
    InvalidFirmware,
    InvalidPolicy,
    Policy,
    decide,
    effective_mtu,
)
from delivery.errors import DeliveryError
from delivery.protocol import (
    Command,
    Status,
    Swap,
    Sync,
    UpdateStatus,
    Wait,
    Write,
    decode_command,
    encode_command,
)

U32_MAX = 2**32 - 1
OLD = b"0.1.0"
NEW = b"0.1.1"


def image(size: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(size))


FW = FirmwareImage.from_image(NEW, image(1000))


# --- the device model ---------------------------------------------------------------------


@dataclass
class SimulatedDevice:
    """A device running embedded-update's updater loop against ``decide()``.

    - ``Write`` at offset 0 starts a new update (embedded-update calls ``device.start``);
      any other offset must be exactly where the device's update stands. The block is
      written there, and the device reports ``update{version, offset + len(data)}``.
    - ``Swap`` verifies the SHA-256 of the written bytes, then reboots into the new version
      (``update`` cleared). On a mismatch it discards what it wrote and starts over.
    - ``Sync`` stops the loop; ``Wait`` waits and asks again.
    """

    version: bytes
    mtu: int | None
    update: UpdateStatus | None = None
    written: bytearray = field(default_factory=bytearray)
    synced: bool = False
    waits: int = 0
    swaps_rejected: int = 0

    def status(self, correlation_id: int | None = None) -> Status:
        return Status(self.version, self.mtu, correlation_id, self.update)

    def apply(self, command: Command) -> None:
        match command:
            case Write(version=version, offset=offset, data=data):
                if offset == 0:
                    self.written = bytearray()
                else:
                    assert self.update == UpdateStatus(version, offset), "a gap in the image"
                assert len(self.written) == offset
                self.written += data
                self.update = UpdateStatus(version, offset + len(data))
            case Swap(version=version, checksum=checksum):
                assert self.update is not None and self.update.version == version
                if hashlib.sha256(self.written).digest() == checksum:
                    self.version = version
                else:
                    self.swaps_rejected += 1
                self.update = None
                self.written = bytearray()
            case Sync():
                self.synced = True
            case Wait():
                self.waits += 1

    def run(self, target: FirmwareImage | None, policy: Policy, max_steps: int) -> int:
        """Talk to ``decide()`` until ``Sync``; return the number of commands it took."""
        for step in range(1, max_steps + 1):
            self.apply(decide(self.status(), target, policy))
            if self.synced:
                return step
        raise AssertionError(f"no Sync within {max_steps} commands")


# --- strategies ---------------------------------------------------------------------------

versions = st.sampled_from([b"", OLD, NEW, b"1.0.0"]) | st.binary(max_size=16)
correlation_ids = st.none() | st.integers(0, U32_MAX)
mtus = st.none() | st.sampled_from([0, 1, 15, 16, 17, 512, 16384, 16385, U32_MAX])
mtus |= st.integers(0, 64) | st.integers(0, U32_MAX)
firmwares = st.builds(FirmwareImage.from_image, versions, st.binary(min_size=1, max_size=3000))


@st.composite
def custom_policies(draw: st.DrawFn) -> Policy:
    min_mtu = draw(st.integers(1, 64))
    default_mtu = min_mtu + draw(st.integers(0, 600))
    return Policy(
        default_mtu=default_mtu,
        max_mtu=default_mtu + draw(st.integers(0, 20000)),
        min_mtu=min_mtu,
        poll_synced=draw(st.none() | st.integers(0, U32_MAX)),
        poll_wait=draw(st.integers(0, U32_MAX)),
    )


policies = st.just(DEFAULT_POLICY) | custom_policies()


@st.composite
def updates(draw: st.DrawFn, target: FirmwareImage) -> UpdateStatus | None:
    """Any update a device may report for ``target``: valid, foreign, past the end, absurd."""
    version = draw(st.just(target.version) | versions)
    offset = draw(st.integers(0, target.size + 2) | st.integers(0, U32_MAX))
    return draw(st.none() | st.just(UpdateStatus(version, offset)))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Status, FirmwareImage]:
    target = draw(firmwares)
    status = Status(draw(versions), draw(mtus), draw(correlation_ids), draw(updates(target)))
    return status, target


def honest_device(status: Status, target: FirmwareImage) -> SimulatedDevice:
    """A device in ``status`` that really holds what its update claims, where it can."""
    device = SimulatedDevice(status.version, status.mtu, status.update)
    update = status.update
    if update is not None and update.version == target.version and update.offset <= target.size:
        device.written = bytearray(target.data[: update.offset])
    return device


def blocks(target: FirmwareImage, status: Status, policy: Policy = DEFAULT_POLICY) -> int:
    return math.ceil(target.size / effective_mtu(status, policy))


# --- properties ---------------------------------------------------------------------------


@given(scenarios(), policies)
def test_writes_stay_inside_the_image_and_within_the_mtu(
    scenario: tuple[Status, FirmwareImage], policy: Policy
) -> None:
    status, target = scenario
    command = decide(status, target, policy)
    if isinstance(command, Write):
        end = command.offset + len(command.data)
        assert 0 <= command.offset < end <= target.size
        assert command.data == target.data[command.offset : end]
        assert 0 < len(command.data) <= effective_mtu(status, policy)
        assert len(command.data) == min(effective_mtu(status, policy), target.size - command.offset)


@given(scenarios(), policies)
def test_correlation_id_is_always_echoed(
    scenario: tuple[Status, FirmwareImage], policy: Policy
) -> None:
    status, target = scenario
    assert decide(status, target, policy).correlation_id == status.correlation_id
    assert decide(status, None, policy).correlation_id == status.correlation_id


@given(scenarios(), policies)
def test_a_device_converges_then_gets_sync(
    scenario: tuple[Status, FirmwareImage], policy: Policy
) -> None:
    status, target = scenario
    device = honest_device(status, target)
    steps = device.run(target, policy, max_steps=blocks(target, status, policy) + 2)
    assert device.version == target.version
    assert device.swaps_rejected == 0
    if status.version != target.version:
        assert device.update is None  # it swapped and rebooted
    assert steps <= blocks(target, status, policy) + 2


@given(firmwares, versions, mtus, st.data())
def test_a_device_lying_about_its_progress_recovers_after_one_rejected_swap(
    target: FirmwareImage, version: bytes, mtu: int | None, data: st.DataObject
) -> None:
    """A device claiming k bytes it does not hold: one failed Swap, then a full rewrite."""
    claimed = data.draw(st.integers(1, target.size))
    garbage = bytes(b ^ 0xFF for b in target.data[:claimed])
    status = Status(version, mtu, None, UpdateStatus(target.version, claimed))
    device = SimulatedDevice(version, mtu, status.update, bytearray(garbage))
    if version == target.version:
        assert device.run(target, DEFAULT_POLICY, max_steps=1) == 1
        return
    device.run(target, DEFAULT_POLICY, max_steps=2 * blocks(target, status) + 3)
    assert device.version == target.version
    assert device.swaps_rejected == 1


@given(firmwares, versions, mtus, correlation_ids, st.data())
def test_resume_continues_at_a_valid_offset(
    target: FirmwareImage,
    version: bytes,
    mtu: int | None,
    correlation_id: int | None,
    data: st.DataObject,
) -> None:
    offset = data.draw(st.integers(0, target.size - 1))
    status = Status(version, mtu, correlation_id, UpdateStatus(target.version, offset))
    command = decide(status, target)
    if version == target.version:
        assert isinstance(command, Sync)
    else:
        assert isinstance(command, Write)
        assert command.offset == offset


@given(firmwares, versions, versions, mtus, st.data())
def test_an_update_for_another_version_restarts_at_zero(
    target: FirmwareImage, version: bytes, other: bytes, mtu: int | None, data: st.DataObject
) -> None:
    offset = data.draw(st.integers(0, U32_MAX))
    status = Status(version, mtu, None, UpdateStatus(other, offset))
    command = decide(status, target)
    if version == target.version:
        assert isinstance(command, Sync)
    elif other != target.version:
        assert isinstance(command, Write)
        assert command.offset == 0


@given(firmwares, versions, mtus, st.data())
def test_an_offset_past_the_end_restarts_at_zero(
    target: FirmwareImage, version: bytes, mtu: int | None, data: st.DataObject
) -> None:
    offset = data.draw(st.integers(target.size + 1, U32_MAX))
    status = Status(version, mtu, None, UpdateStatus(target.version, offset))
    command = decide(status, target)
    if version == target.version:
        assert isinstance(command, Sync)
    else:
        assert isinstance(command, Write)
        assert command.offset == 0


@given(scenarios(), scenarios(), policies)
def test_decide_is_stateless(
    first: tuple[Status, FirmwareImage], second: tuple[Status, FirmwareImage], policy: Policy
) -> None:
    before = decide(*first, policy)
    decide(*second, policy)
    assert decide(*first, policy) == before
    assert decide(*first, policy) == decide(*first, policy)


@given(scenarios(), policies)
def test_every_command_survives_the_wire(
    scenario: tuple[Status, FirmwareImage], policy: Policy
) -> None:
    status, target = scenario
    for command in (decide(status, target, policy), decide(status, None, policy)):
        assert decode_command(encode_command(command)) == command


@given(st.none() | st.integers(-(2**33), 2**33), policies)
def test_effective_mtu_is_clamped(mtu: int | None, policy: Policy) -> None:
    result = effective_mtu(Status(OLD, mtu), policy)
    assert policy.min_mtu <= result <= policy.max_mtu
    if mtu is None or mtu <= 0:
        assert result == policy.default_mtu
    elif policy.min_mtu <= mtu <= policy.max_mtu:
        assert result == mtu


# --- one example per rule -----------------------------------------------------------------


def test_no_target_waits() -> None:
    assert decide(Status(OLD, 512, 7), None) == Wait(correlation_id=7, poll=30)
    assert decide(Status(OLD), None, Policy(poll_wait=5)) == Wait(correlation_id=None, poll=5)


def test_same_version_syncs() -> None:
    status = Status(NEW, 512, 9, UpdateStatus(NEW, 300))
    assert decide(status, FW) == Sync(version=NEW, correlation_id=9, poll=300)
    assert decide(Status(NEW), FW, Policy(poll_synced=None)) == Sync(NEW, None, None)


def test_first_status_writes_the_first_block() -> None:
    assert decide(Status(OLD, 256, 3), FW) == Write(NEW, 3, 0, FW.data[:256])


def test_resume_continues_at_the_reported_offset() -> None:
    status = Status(OLD, 256, None, UpdateStatus(NEW, 512))
    assert decide(status, FW) == Write(NEW, None, 512, FW.data[512:768])


def test_last_block_is_short() -> None:
    status = Status(OLD, 256, None, UpdateStatus(NEW, 768))
    assert decide(status, FW) == Write(NEW, None, 768, FW.data[768:1000])


def test_complete_image_swaps_with_the_raw_sha256() -> None:
    command = decide(Status(OLD, 256, 4, UpdateStatus(NEW, 1000)), FW)
    assert command == Swap(NEW, 4, hashlib.sha256(FW.data).digest())
    assert isinstance(command, Swap) and len(command.checksum) == 32


def test_update_for_another_version_restarts() -> None:
    status = Status(OLD, 256, None, UpdateStatus(b"0.0.9", 512))
    assert decide(status, FW) == Write(NEW, None, 0, FW.data[:256])


def test_offset_past_the_end_restarts() -> None:
    # Drogue Ajour answered this with a Swap of an image it never finished writing.
    status = Status(OLD, 256, None, UpdateStatus(NEW, 1001))
    assert decide(status, FW) == Write(NEW, None, 0, FW.data[:256])


def test_a_negative_offset_restarts() -> None:
    # Not possible on the wire (u32), but a Status built in Python must not slice from the end.
    status = Status(OLD, 256, None, UpdateStatus(NEW, -1))
    assert decide(status, FW) == Write(NEW, None, 0, FW.data[:256])


def test_the_vectors_update_status_resumes() -> None:
    # status_update in tests/data/vectors/embedded-update.tsv
    status = Status(OLD, 512, None, UpdateStatus(NEW, 1024))
    target = FirmwareImage.from_image(NEW, image(4096))
    assert decide(status, target) == Write(NEW, None, 1024, target.data[1024:1536])


@pytest.mark.parametrize(
    ("mtu", "expected"),
    [
        (None, 512),
        (0, 512),
        (-1, 512),
        (1, 16),
        (15, 16),
        (16, 16),
        (200, 200),
        (16384, 16384),
        (16385, 16384),
        (U32_MAX, 16384),
    ],
)
def test_effective_mtu_examples(mtu: int | None, expected: int) -> None:
    assert effective_mtu(Status(OLD, mtu)) == expected
    target = FirmwareImage.from_image(NEW, image(20000))
    command = decide(Status(OLD, mtu), target)
    assert isinstance(command, Write) and len(command.data) == expected


def test_policy_sets_the_mtu_limits() -> None:
    policy = Policy(default_mtu=64, max_mtu=128, min_mtu=32)
    assert [effective_mtu(Status(OLD, m), policy) for m in (None, 0, 8, 100, 4096)] == [
        64,
        64,
        32,
        100,
        128,
    ]


def test_an_honest_device_updates_in_blocks_then_syncs() -> None:
    device = SimulatedDevice(OLD, 256)
    assert device.run(FW, DEFAULT_POLICY, max_steps=6) == 6  # 4 writes, swap, sync
    assert device.version == NEW


def test_a_corrupted_image_is_rejected_by_the_device_and_rewritten() -> None:
    bad = FirmwareImage(NEW, FW.data, bytes(32))
    device = SimulatedDevice(OLD, 512)
    for _ in range(3):  # write, write, swap
        device.apply(decide(device.status(), bad))
    assert device.swaps_rejected == 1 and device.version == OLD
    assert decide(device.status(), bad) == Write(NEW, None, 0, FW.data[:512])


# --- refusals -----------------------------------------------------------------------------


def test_an_empty_image_is_refused() -> None:
    with pytest.raises(InvalidFirmware, match="empty"):
        FirmwareImage.from_image(NEW, b"")


@pytest.mark.parametrize("checksum", [b"", bytes(31), bytes(33), hashlib.sha256().hexdigest()])
def test_a_checksum_that_is_not_a_raw_sha256_is_refused(checksum: bytes | str) -> None:
    raw = checksum.encode() if isinstance(checksum, str) else checksum
    with pytest.raises(InvalidFirmware, match="32-byte"):
        FirmwareImage(NEW, b"x", raw)


def test_firmware_repr_leaves_out_the_image() -> None:
    assert "data" not in repr(FW) and FW.size == 1000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_mtu": 0},
        {"default_mtu": 8},
        {"default_mtu": 20000},
        {"max_mtu": 100, "default_mtu": 512},
        {"poll_wait": -1},
        {"poll_synced": 2**32},
    ],
)
def test_contradictory_policies_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidPolicy):
        Policy(**kwargs)


def test_refusals_are_delivery_errors() -> None:
    assert issubclass(InvalidFirmware, DeliveryError) and issubclass(InvalidPolicy, DeliveryError)
