"""The demo's continuous fleet: simulated devices polling the worker over HTTP, and QEMU
devices running the real bootloader and updater behind ``ajour-delivery gateway`` relays.

Both keep polling until stopped, like devices in the field: a simulated device sends its
status, follows the commands until ``Sync`` or ``Wait``, then polls again after ``POLL``
seconds; a QEMU device is powered on, runs the updater until it is in sync (the test
application then exits through semihosting) and is powered on again ``POLL`` seconds later.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ajour_devices.firmware import flash, make
from ajour_devices.qemu import QemuDevice
from delivery.device import SimulatedDevice
from delivery.errors import DeliveryError
from delivery.gateway import HttpUplink
from delivery.protocol import Command, Status, Swap, Sync, Wait, decode_command, encode_status
from delivery.simulator import HttpDeviceLink

POLL = 2.0  # seconds between a device's polls once it is in sync
THREADS = 8  # threads that share the simulated devices
STORY = ("swap", "revert", "confirmed", "fails on trial", "refused")  # QEMU console words
BOOTED = "boot: slot A "  # the bootloader's check of the image it boots


@dataclass
class DemoDevice(SimulatedDevice):
    """A simulated device whose bootloader reverts ``bad`` versions (the simulator's
    ``revert`` failure mode, for those versions only) and that advertises delta updates
    once it runs a version other than ``legacy`` (its first firmware predates them)."""

    bad: frozenset[bytes] = frozenset()
    legacy: bytes = b""
    wire_bytes: int = 0  # statuses sent and commands received (CBOR bodies)

    def status(self) -> Status:
        self.delta = self.version != self.legacy
        return super().status()

    def apply(self, command: Command) -> None:
        if isinstance(command, Swap):
            self.revert = command.version in self.bad
        super().apply(command)


class SimulatedFleet:
    """``names`` polling ``url`` as devices of ``app`` from ``version`` (image ``firmware``)."""

    def __init__(
        self, url: str, app: str, names: list[str], version: str, firmware: bytes, bad: set[str]
    ) -> None:
        self.url, self.app = url, app
        self.devices = {
            name: DemoDevice(
                version.encode(),
                512,
                firmware=firmware,
                bad=frozenset(v.encode() for v in bad),
                legacy=version.encode(),
            )
            for name in names
        }
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(names[i::THREADS],), daemon=True)
            for i in range(THREADS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def versions(self) -> dict[str, str]:
        return {n: d.version.decode() for n, d in self.devices.items()}

    def _run(self, names: list[str]) -> None:
        links = {n: HttpDeviceLink(self.url, self.app, n, None, timeout=10.0) for n in names}
        due = dict.fromkeys(names, 0.0)
        try:
            while not self._stop.is_set():
                for name in names:
                    if due[name] <= time.monotonic() and not self._stop.is_set():
                        due[name] = time.monotonic() + self._poll(self.devices[name], links[name])
                self._stop.wait(0.05)
        finally:
            for link in links.values():
                link.close()

    def _poll(self, device: DemoDevice, link: HttpDeviceLink) -> float:
        """One poll: follow commands until Sync or Wait; seconds until the next one."""
        for _ in range(2000):
            try:
                status = encode_status(device.status())
                reply = link(status)
                command = decode_command(reply)
            except (DeliveryError, OSError):
                self.errors += 1
                link.reset()
                return POLL
            device.wire_bytes += len(status) + len(reply)
            device.apply(command)
            if isinstance(command, (Sync, Wait)):
                return POLL
        return POLL


class QemuFleet:
    """QEMU devices ``names`` flashed with ``image`` (an MCUboot image signed with the image
    key), each behind a gateway to ``url``. Their bootloader is built here with ``pubkey``
    (the image key's raw ed25519 public half): it boots or swaps in only images whose SHA-256
    and ED25519 signature check."""

    def __init__(
        self, root: Path, url: str, app: str, names: list[str], image: bytes, pubkey: bytes
    ) -> None:
        build = root / "boot-build"
        # the bootloader (device/boot), with the host's arm-none-eabi-gcc and the key
        make(build, "all", "BOOT_PUBKEY=" + ",".join(map(hex, pubkey)))
        self.devices: dict[str, QemuDevice] = {}
        for name in names:
            device = QemuDevice(
                name, root / name, build / "boot.elf", HttpUplink(url, app, name, None, 10.0)
            )
            (device.folder / "flash.bin").write_bytes(flash(image))
            self.devices[name] = device
        self._story: dict[str, list[str]] = {name: [] for name in names}
        self._checks: dict[str, list[str]] = {name: [] for name in names}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(d,), daemon=True)
            for d in self.devices.values()
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        for device in self.devices.values():
            device.stop()

    def wire_bytes(self) -> int:
        return sum(d.stats.bytes_in + d.stats.bytes_out for d in self.devices.values())

    def story(self, name: str) -> list[str]:
        """What the device's bootloader and application said about updates (swaps, trial
        boots, confirms, reverts), over all its power-ons so far."""
        return list(self._story[name])

    def checks(self, name: str) -> list[str]:
        """What the device's bootloader said about each image it booted, once per image
        (``boot: slot A 1.1.0+0 (6376 bytes, SHA-256 and ED25519 ok)``), in order."""
        return list(self._checks[name])

    def _run(self, device: QemuDevice) -> None:
        while not self._stop.is_set():
            run = device.power_on()
            while run.wait(0.2) is None:
                if self._stop.is_set():
                    run.kill()
                    return
                if run.seconds > 120:  # a device stuck that long: cut the power
                    run.kill()
            # a power-on every few seconds: keep what tells the story, not every console
            lines = run.lines()
            self._story[device.name] += [
                line for line in lines if any(word in line for word in STORY)
            ]
            checks = self._checks[device.name]
            checks += [line for line in lines if line.startswith(BOOTED) and line not in checks]
            if len(device.runs) > 1:  # the next power-on reuses the latest's file name
                if device.runs[0].console != run.console:
                    device.runs[0].console.unlink(missing_ok=True)
                del device.runs[0]
            self._stop.wait(POLL)
