"""Twenty QEMU devices update together: each its own flash file, QEMU process and gateway
(``ajour_devices.qemu.QemuFleet``), all through one worker's HTTP transport; one of them
loses power in the middle of its download and resumes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ajour_devices.firmware import flash
from ajour_devices.qemu import QemuFleet
from ajour_devices.server import MTU, build_firmware, image, serving

DEVICES = 20


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_firmware(tmp_path_factory.mktemp("device-build"))


@pytest.mark.slow
def test_twenty_qemu_devices_update_together_one_through_a_power_cut(
    build: Path, tmp_path: Path
) -> None:
    old, new = image(build, "1.0.0"), image(build, "1.1.0")
    names = [f"dev{i}" for i in range(DEVICES)]
    writes = -(-len(new) // MTU)
    started = time.monotonic()
    with (
        serving(tmp_path, names, "1.1.0", new) as served,
        QemuFleet(tmp_path / "devices", build / "boot.elf", names, lambda _: flash(old),
                  served.uplink) as fleet,
    ):  # fmt: skip
        fleet.power_on()
        cut = fleet.devices["dev7"]
        deadline = time.monotonic() + 60
        while cut.stats.replies < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert cut.runs[-1].proc.poll() is None, "dev7 finished before its power cut"
        cut.power_cycle()
        codes = fleet.wait(timeout=150)
        seconds = time.monotonic() - started
        assert codes == dict.fromkeys(names, 0), {
            n: fleet.devices[n].runs[-1].lines()[-3:] for n, c in codes.items() if c != 0
        }
        for name, device in fleet.devices.items():
            assert device.runs[-1].lines()[-1] == "app: synced 1.1.0", name
            row = served.worker.store.get("app", name) if served.worker.store else None
            assert row is not None and (row.state, row.current) == ("Synced", "1.1.0"), name
            stats = device.stats
            garbled = (stats.bad_crc, stats.oversized, stats.truncated, stats.rejected)
            assert garbled == (0, 0, 0, 0), name
            if name != "dev7":  # every other device: its Writes, Swap and Sync, no retry
                assert stats.replies == writes + 2, (name, stats)
        resumed = cut.runs[-1].lines()[2]
        assert resumed.startswith("app: resume at "), cut.runs[-1].lines()
    on_wire = sum(d.stats.bytes_in + d.stats.bytes_out for d in fleet.devices.values())
    print(
        f"{DEVICES} devices: {seconds:.1f} s, {on_wire} bytes on the UARTs for"
        f" {DEVICES} x {len(new)} bytes of image ({on_wire / (DEVICES * len(new)):.3f}x)"
    )
