"""Staged rollouts with delta updates: a device updating by patch counts as downloading,
so one stuck at a patch offset fails its download like one stuck at an image offset."""

from __future__ import annotations

from pathlib import Path

from ajour_build.core.rollout.model import Outcome
from delivery.device import SimulatedDevice
from delivery.protocol import (
    PATCH_DETOOLS,
    Status,
    Sync,
    UpdateStatus,
    WritePatch,
    decode_command,
    encode_status,
)
from tests.test_rollouts import IMAGE_ONE, IMAGE_TWO, Setup, ask, outcome, until


def test_a_delta_device_updates_by_patch_in_a_rollout(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    worker = s.worker()
    ask(worker, SimulatedDevice(b"1.0"))
    s.publish_two(worker)
    device = SimulatedDevice(b"1.0", firmware=IMAGE_ONE, delta=True)
    until(worker, device, Sync)
    assert device.version == b"1.1" and device.firmware == IMAGE_TWO
    assert 0 < device.patch_bytes == device.bytes_received < len(IMAGE_TWO) // 10
    assert outcome(worker, "d0") is Outcome.CONFIRMED


def test_a_delta_device_stuck_mid_patch_fails_its_download(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    worker = s.worker()
    ask(worker, SimulatedDevice(b"1.0"))
    s.publish_two(worker)
    stuck = encode_status(Status(b"1.0", 512, None, UpdateStatus(b"1.1", 4), PATCH_DETOOLS))
    assert isinstance(decode_command(worker.handle("app", "d2", stuck) or b""), WritePatch)
    s.clock.now += 6  # past the stall deadline (5 s)
    assert isinstance(decode_command(worker.handle("app", "d2", stuck) or b""), WritePatch)
    assert outcome(worker, "d2") is Outcome.FAILED_DOWNLOAD


def test_a_delta_device_asking_again_for_its_patch_swap_fails_after_three(
    tmp_path: Path,
) -> None:
    """Like a device reporting its finished image again: its swaps fail; at the end of a
    patch the finished offset is the patch's size."""
    s = Setup(tmp_path)
    worker = s.worker()
    ask(worker, SimulatedDevice(b"1.0"))
    s.publish_two(worker)
    first = decode_command(
        worker.handle("app", "d1", encode_status(Status(b"1.0", 512, None, None, 1))) or b""
    )
    assert isinstance(first, WritePatch)
    finished = UpdateStatus(b"1.1", len(first.data))  # the whole patch in one WritePatch
    kinds = []
    for _ in range(4):
        status = encode_status(Status(b"1.0", 512, None, finished, PATCH_DETOOLS))
        kinds.append(type(decode_command(worker.handle("app", "d1", status) or b"")).__name__)
    assert kinds == ["Swap", "Swap", "Swap", "Sync"]
    assert outcome(worker, "d1") is Outcome.FAILED_DOWNLOAD
