"""A QEMU device updates itself through the real worker: the C updater in firmware on
mps2-an385 (device/boot/app/device.c), its UART relayed by the product gateway
(``delivery.gateway``, as ``ajour-delivery gateway`` runs it) to the worker's HTTP transport
with the device's password, the bootloader (device/boot/, with a built-in ed25519 key)
verifying and swapping, the application confirming, or never confirming and reverted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ajour_build.core.rollout.model import Outcome
from ajour_devices.firmware import SLOT_SIZE, flash
from ajour_devices.qemu import QemuDevice
from ajour_devices.server import MTU, build_firmware, image, serving
from tests.registry import free_port


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_firmware(tmp_path_factory.mktemp("device-build"))


def device_on(build: Path, tmp_path: Path, uplink: object, slot_a: bytes) -> QemuDevice:
    device = QemuDevice("dev0", tmp_path / "dev0", build / "boot.elf", uplink)  # type: ignore[arg-type]
    (device.folder / "flash.bin").write_bytes(flash(slot_a))
    return device


def test_a_qemu_device_updates_from_1_0_0_to_1_1_0_through_the_gateway(
    build: Path, tmp_path: Path
) -> None:
    old, new = image(build, "1.0.0"), image(build, "1.1.0")
    with serving(tmp_path, ["dev0"], "1.1.0", new) as served:
        device = device_on(build, tmp_path, served.uplink("dev0"), old)
        try:
            run = device.power_on()
            assert run.wait(60) == 0, run.lines()
            lines = run.lines()
            writes = -(-len(new) // MTU)
            assert lines[0].startswith("boot: slot A 1.0.0+0 ")
            assert lines[0].endswith("SHA-256 and ED25519 ok)")
            assert lines[1:3] == ["app 1.0.0", "app: swap, reset"]
            assert lines[3] == "boot: slot B 1.1.0+0 swapped in, on trial"
            assert lines[4].startswith("boot: slot A 1.1.0+0 ")
            assert lines[5:] == ["app 1.1.0", "app: confirmed", "app: synced 1.1.0"]
            stats = device.stats
            assert stats.replies == writes + 2  # the Writes, Swap, then Sync after the reset
            assert (stats.bad_crc, stats.oversized, stats.truncated) == (0, 0, 0)
            assert (stats.unanswered, stats.late) == (0, 0)
            row = served.worker.store.get("app", "dev0") if served.worker.store else None
            assert row is not None and (row.state, row.current) == ("Synced", "1.1.0")
            # no 1 s stall after enabling RX (QEMU's main loop polled the UART again only then):
            # with it, the two boots cost 2 s of wall time whatever the load (was 2.1 s in all);
            # without it, 0.3-0.4 s on a quiet machine. 1.9 s leaves room for a busy one.
            assert run.seconds < 1.9, run.seconds

            again = device.power_on()  # the next power-on boots 1.1.0 directly
            assert again.wait(60) == 0, again.lines()
            assert again.lines()[0].startswith("boot: slot A 1.1.0+0 ")
            assert again.lines()[1:] == ["app 1.1.0", "app: synced 1.1.0"]
            assert device.stats.connects >= 2  # the gateway came back for the new process
        finally:
            device.stop()
    stored = (device.folder / "flash.bin").read_bytes()
    assert stored[: len(new)] == new and stored[SLOT_SIZE : SLOT_SIZE + len(old)] == old
    print(f"update: {run.seconds:.2f} s, {stats.replies} exchanges, image {len(new)} bytes")


def test_power_lost_mid_download_resumes_at_the_offset_reached(build: Path, tmp_path: Path) -> None:
    old, new = image(build, "1.0.0"), image(build, "1.1.0")
    with serving(tmp_path, ["dev0"], "1.1.0", new) as served:
        device = device_on(build, tmp_path, served.uplink("dev0"), old)
        try:
            cut = device.power_on()
            deadline = time.monotonic() + 30
            while device.stats.replies < 3 and time.monotonic() < deadline:
                time.sleep(0.001)
            cut.kill()  # power lost: 3 Writes sent, at least 2 applied (the 3rd in flight)
            assert cut.lines()[1:] == ["app 1.0.0"], cut.lines()
            before = device.stats.replies
            run = device.power_on()
            assert run.wait(60) == 0, run.lines()
        finally:
            device.stop()
    lines = run.lines()
    assert lines[1] == "app 1.0.0" and lines[-1] == "app: synced 1.1.0"
    assert lines[2].startswith("app: resume at "), lines
    resumed = int(lines[2].removeprefix("app: resume at "))
    assert resumed % MTU == 0 and resumed >= 2 * MTU
    writes = -(-len(new) // MTU)
    assert device.stats.replies - before == writes - resumed // MTU + 2, "did not resume"
    assert (device.folder / "flash.bin").read_bytes()[: len(new)] == new


def test_worker_down_the_device_retries_until_it_is_back(build: Path, tmp_path: Path) -> None:
    """No worker yet: the gateway answers nothing, the device times out (2 s) and sends its
    status again; once the worker serves, the update goes through."""
    old, new = image(build, "1.0.0"), image(build, "1.1.0")
    port = free_port()
    from delivery.gateway import HttpUplink

    uplink = HttpUplink(f"http://127.0.0.1:{port}", "app", "dev0", "pw-dev0", timeout=5.0)
    device = device_on(build, tmp_path, uplink, old)
    try:
        run = device.power_on()
        deadline = time.monotonic() + 30
        while device.stats.unanswered < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert device.stats.unanswered >= 2 and device.stats.replies == 0
        assert run.proc.poll() is None, run.lines()  # the device keeps trying
        with serving(tmp_path, ["dev0"], "1.1.0", new, port=port):
            assert run.wait(60) == 0, run.lines()
    finally:
        device.stop()
    lines = run.lines()
    assert "app: error 6" in lines, lines  # AJOUR_E_IO: no reply within the timeout
    assert lines[-1] == "app: synced 1.1.0"


def test_an_image_that_never_confirms_is_reverted_and_the_rollout_records_it(
    build: Path, tmp_path: Path
) -> None:
    old = image(build, "1.0.0")
    failing = image(build, "1.1.0", "app-device-1.1.0-noconfirm")
    with serving(tmp_path, ["dev0"], "1.0.0", old, rollout=True) as served:
        device = device_on(build, tmp_path, served.uplink("dev0"), old)
        try:
            first = device.power_on()  # 1.0.0 is the baseline: Sync
            assert first.wait(60) == 0 and first.lines()[-1] == "app: synced 1.0.0"
            served.publish("1.1.0", failing)
            run = device.power_on()
            assert run.wait(60) == 0, run.lines()
            lines = run.lines()
            assert lines[1:3] == ["app 1.0.0", "app: swap, reset"]
            assert lines[3] == "boot: slot B 1.1.0+0 swapped in, on trial"
            assert lines[5:7] == ["app 1.1.0", "app: fails on trial, reset"]
            assert lines[7] == "boot: the update on trial was not confirmed: reverted"
            assert lines[8].startswith("boot: slot A 1.0.0+0 ")
            assert lines[9:] == ["app 1.0.0", "app: synced 1.0.0"]
            rollouts = served.worker.rollouts
            assert rollouts is not None
            latest = rollouts.store.latest("app")
            assert latest is not None and latest.to_version == "1.1.0"
            record = rollouts.store.last("app", latest.seq, "dev0")
            assert record is not None and record.outcome is Outcome.REVERTED
            row = served.worker.store.get("app", "dev0") if served.worker.store else None
            assert row is not None and (row.state, row.current) == ("Synced", "1.0.0")
            assert row.detail == "rollout 2: reverted with 1.1.0; stays on 1.0.0 until retried"

            replies = device.stats.replies
            again = device.power_on()  # not offered 1.1.0 again: Sync on 1.0.0 at once
            assert again.wait(60) == 0, again.lines()
            assert again.lines()[1:] == ["app 1.0.0", "app: synced 1.0.0"]
            assert device.stats.replies == replies + 1
        finally:
            device.stop()
