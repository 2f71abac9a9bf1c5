"""A QEMU device updates itself through the real worker: the C updater in firmware on
mps2-an385 (device/boot/app/device.c), its UART relayed to ``Worker.handle`` frame by frame,
the bootloader (device/boot/, with a built-in ed25519 key) verifying and swapping, the
application confirming."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ajour_build.core.fleet import load_fleet
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.firmware import QEMU
from tests.test_device_boot import BOOT, SLOT_SIZE, flash, make_key, signed_image
from tests.test_device_lib import FLEET, read_frame, send_frame
from tests.test_sources import publish


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bootloader with a built-in ed25519 key (``key.pem`` beside it), both apps."""
    out = tmp_path_factory.mktemp("device-build")
    pubkey = make_key(out / "key.pem")
    apps = [["device", "APP_VERSION=1.0.0"], ["device", "APP_VERSION=1.1.0"]]
    for goal in (["all", f"BOOT_PUBKEY={pubkey}"], *apps):
        subprocess.run(
            ["make", "-s", "-C", str(BOOT), f"BUILD={out}", *goal],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return out


@dataclass
class PowerOn:
    returncode: int
    console: list[str]  # what the bootloader and the application printed (semihosting)
    exchanges: int
    seconds: float


def power_on(build: Path, device: Path, worker: Worker, cut_after: int | None = None) -> PowerOn:
    """One QEMU process on the device's flash file, its UART relayed to the worker.

    With ``cut_after``, the power is cut (QEMU killed) when the status after that many
    exchanges arrives: the device has then applied exactly ``cut_after`` commands.
    """
    started = time.perf_counter()
    args = [*QEMU, "-kernel", str(build / "boot.elf")]
    args[args.index("-serial") + 1] = "stdio"
    exchanges = 0
    with (device / "console").open("w") as console:
        proc = subprocess.Popen(
            args, cwd=device, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=console
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            while (status := read_frame(proc.stdout)) is not None:
                if exchanges == cut_after:
                    proc.kill()
                    break
                reply = worker.handle("app", "dev0", status)
                assert reply is not None, "the worker refused the device's status"
                exchanges += 1
                send_frame(proc.stdin, reply)
        finally:
            proc.stdin.close()
            returncode = proc.wait(timeout=60)
            proc.stdout.close()
    lines = (device / "console").read_text().splitlines()
    return PowerOn(returncode, lines, exchanges, time.perf_counter() - started)


MTU = 1024 - 56  # the device's buffer less AJOUR_WRITE_OVERHEAD


def setup_device(build: Path, tmp_path: Path) -> tuple[Worker, Path, bytes, bytes]:
    """A worker serving 1.1.0, and a device whose slot A holds 1.0.0."""
    old = signed_image(build, "1.0.0", "app-device-1.0.0", key=build / "key.pem")
    new = signed_image(build, "1.1.0", "app-device-1.1.0", key=build / "key.pem")
    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "1.1.0", new)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    worker = Worker(
        Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}"),
        StatusStore(),
    )
    device = tmp_path / "dev0"
    device.mkdir()
    (device / "flash.bin").write_bytes(flash(old))
    return worker, device, old, new


def test_a_qemu_device_updates_from_1_0_0_to_1_1_0_through_the_worker(
    build: Path, tmp_path: Path
) -> None:
    worker, device, old, new = setup_device(build, tmp_path)

    run = power_on(build, device, worker)
    assert run.returncode == 0, run.console
    writes = -(-len(new) // MTU)
    assert run.console[0].startswith("boot: slot A 1.0.0+0 ")
    assert run.console[0].endswith("SHA-256 and ED25519 ok)")
    assert run.console[1:3] == ["app 1.0.0", "app: swap, reset"]
    assert run.console[3] == "boot: slot B 1.1.0+0 swapped in, on trial"
    assert run.console[4].startswith("boot: slot A 1.1.0+0 ")
    assert run.console[5:] == ["app 1.1.0", "app: confirmed", "app: synced 1.1.0"]
    assert run.exchanges == writes + 2  # the Writes, Swap, then Sync after the reset
    row = worker.store.get("app", "dev0") if worker.store else None
    assert row is not None and (row.state, row.current) == ("Synced", "1.1.0")

    again = power_on(build, device, worker)  # the next power-on boots 1.1.0 directly
    assert again.returncode == 0, again.console
    assert again.console[0].startswith("boot: slot A 1.1.0+0 ")
    assert again.console[1:] == ["app 1.1.0", "app: synced 1.1.0"]
    stored = (device / "flash.bin").read_bytes()
    assert stored[: len(new)] == new and stored[SLOT_SIZE : SLOT_SIZE + len(old)] == old
    print(f"update: {run.seconds:.2f} s, {run.exchanges} exchanges, image {len(new)} bytes")


def test_power_lost_mid_download_resumes_at_the_offset_reached(build: Path, tmp_path: Path) -> None:
    worker, device, _, new = setup_device(build, tmp_path)
    cut = power_on(build, device, worker, cut_after=3)
    assert cut.console[1:] == ["app 1.0.0"], cut.console
    run = power_on(build, device, worker)
    assert run.returncode == 0, run.console
    assert run.console[1:3] == ["app 1.0.0", f"app: resume at {3 * MTU}"]
    assert run.console[-1] == "app: synced 1.1.0"
    writes = -(-len(new) // MTU)
    assert run.exchanges == writes - 3 + 2, "the download did not resume"
    assert (device / "flash.bin").read_bytes()[: len(new)] == new
