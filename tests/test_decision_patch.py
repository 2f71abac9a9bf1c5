"""decide() for delta updates: WritePatch only to devices that advertise it and have a patch,
offsets in patch bytes, the Swap with the full image's checksum, and the fallback."""

from __future__ import annotations

import hashlib
import io

import detools
import pytest

from delivery.decision import FirmwareImage, InvalidFirmware, Patch, Policy, decide
from delivery.device import SimulatedDevice
from delivery.protocol import (
    PATCH_DETOOLS,
    Command,
    Status,
    Swap,
    Sync,
    UpdateStatus,
    Write,
    WritePatch,
    decode_command,
    encode_command,
)

OLD = bytes(range(256)) * 24
NEW = OLD[:3000] + b"one line changed" + OLD[3016:]


def make_patch(old: bytes, new: bytes) -> bytes:
    out = io.BytesIO()
    detools.create_patch(
        io.BytesIO(old), io.BytesIO(new), out, compression="crle", patch_type="sequential"
    )
    return out.getvalue()


PATCH = make_patch(OLD, NEW)
TARGET = FirmwareImage(
    b"1.1.0",
    NEW,
    hashlib.sha256(NEW).digest(),
    (Patch(b"1.0.0", hashlib.sha256(OLD).digest(), PATCH),),
)


def test_the_patch_is_small() -> None:
    assert len(PATCH) * 20 < len(NEW)


def test_an_advertising_device_with_a_patch_gets_write_patch() -> None:
    cmd = decide(Status(b"1.0.0", 16, 7, None, PATCH_DETOOLS), TARGET)
    assert cmd == WritePatch(b"1.1.0", 7, 0, PATCH[:16])
    resumed = decide(Status(b"1.0.0", 16, 7, UpdateStatus(b"1.1.0", 16), PATCH_DETOOLS), TARGET)
    assert resumed == WritePatch(b"1.1.0", 7, 16, PATCH[16:32])


def test_after_the_last_patch_byte_the_swap_carries_the_full_image_checksum() -> None:
    status = Status(b"1.0.0", 512, None, UpdateStatus(b"1.1.0", len(PATCH)), PATCH_DETOOLS)
    assert decide(status, TARGET) == Swap(b"1.1.0", None, hashlib.sha256(NEW).digest())


def test_an_offset_past_the_patch_restarts_it() -> None:
    status = Status(b"1.0.0", 512, None, UpdateStatus(b"1.1.0", len(PATCH) + 1), PATCH_DETOOLS)
    assert decide(status, TARGET) == WritePatch(b"1.1.0", None, 0, PATCH)


@pytest.mark.parametrize(
    "status",
    [
        Status(b"1.0.0", 512),  # an embedded-update device: no patch field
        Status(b"1.0.0", 512, None, None, 0),
        Status(b"1.0.0", 512, None, None, 2),  # a format we do not publish
        Status(b"0.9.0", 512, None, None, PATCH_DETOOLS),  # no patch from its version
    ],
)
def test_others_get_the_full_image(status: Status) -> None:
    assert decide(status, TARGET) == Write(b"1.1.0", None, 0, NEW[:512])


def test_a_synced_device_gets_sync_whatever_it_advertises() -> None:
    assert isinstance(decide(Status(b"1.1.0", None, None, None, PATCH_DETOOLS), TARGET), Sync)


def run(device: SimulatedDevice, target: FirmwareImage) -> list[Command]:
    sent: list[Command] = []
    for _ in range(10_000):
        cmd = decode_command(encode_command(decide(device.status(), target, Policy())))
        sent.append(cmd)
        device.apply(cmd)
        if device.synced:
            return sent
    raise AssertionError("no Sync")


def test_a_delta_device_rebuilds_the_exact_image_from_the_patch() -> None:
    device = SimulatedDevice(b"1.0.0", mtu=64, firmware=OLD, delta=True)
    sent = run(device, TARGET)
    assert device.version == b"1.1.0" and device.firmware == NEW
    assert device.bytes_received == device.patch_bytes == len(PATCH)
    assert not any(isinstance(c, Write) for c in sent)
    assert not device.patch_failed and device.swaps_rejected == 0


def test_a_device_whose_image_differs_falls_back_to_the_full_image() -> None:
    """Its flash does not hold the image the patch was made from (same version)."""
    flipped = OLD[:3200] + bytes([OLD[3200] ^ 0xFF]) + OLD[3201:]
    device = SimulatedDevice(b"1.0.0", mtu=512, firmware=flipped, delta=True)
    sent = run(device, TARGET)
    assert device.patch_failed and device.swaps_rejected == 1
    assert device.version == b"1.1.0" and device.firmware == NEW
    kinds = [type(c).__name__ for c in sent]
    assert kinds[0] == "WritePatch" and "Write" in kinds
    assert kinds.index("Write") > kinds.index("Swap")  # the patch's swap failed first
    assert device.bytes_received == len(PATCH) + len(NEW)


def test_a_device_whose_image_is_too_short_falls_back_mid_patch() -> None:
    device = SimulatedDevice(b"1.0.0", mtu=16, firmware=OLD[:100], delta=True)
    run(device, TARGET)
    assert device.patch_failed and device.firmware == NEW


def test_a_non_delta_device_ignores_patches() -> None:
    device = SimulatedDevice(b"1.0.0", mtu=512, firmware=OLD)
    run(device, TARGET)
    assert device.firmware == NEW and device.patch_bytes == 0
    assert device.bytes_received == len(NEW)


def test_an_empty_patch_is_refused() -> None:
    with pytest.raises(InvalidFirmware, match=r"patch from b'1\.0\.0' is 0 bytes"):
        Patch(b"1.0.0", bytes(32), b"")
