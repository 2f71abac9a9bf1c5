"""Emulated devices: QEMU's mps2-an385 running the bootloader on a persistent flash file,
each with its own ``delivery.gateway.Gateway`` relaying its UART (a Unix socket, so many
devices need no free ports) to an uplink, in a thread of this process.

A power-on is a new QEMU process on the device's directory (its ``flash.bin``): killing it
and starting another is a power cycle. What the bootloader and the application print is
semihosting (QEMU's stderr), kept per power-on in ``console-<n>.log``; the UART carries
frames only. Every wait is bounded.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from delivery.gateway import Gateway, GatewayStats, Uplink
from delivery.uart import UartAddress

QEMU: Final = [
    "qemu-system-arm",
    "-M",
    "mps2-an385",
    "-nographic",
    "-monitor",
    "none",
    "-semihosting-config",
    "enable=on,target=native",
]
UNIX_PATH_MAX: Final = 107


@dataclass
class PowerOn:
    """One QEMU process of a device."""

    proc: subprocess.Popen[bytes]
    console: Path
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def wait(self, timeout: float) -> int | None:
        """Its exit status, or None if it is still running after ``timeout`` seconds."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if self.ended is None:
            self.ended = time.monotonic()
        return code

    def kill(self) -> None:
        """Cut the power."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(30)

    def lines(self) -> list[str]:
        return [
            line
            for line in self.console.read_text(errors="replace").splitlines()
            if not line.startswith("qemu-system-arm:")  # "waiting for connection" notes
        ]

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


class QemuDevice:
    """A device: its directory (``flash.bin``), its power-ons and its gateway thread."""

    def __init__(self, name: str, folder: Path, boot_elf: Path, uplink: Uplink) -> None:
        self.name, self.folder, self.boot_elf = name, folder, boot_elf
        folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "uart"
        if len(str(self.socket)) > UNIX_PATH_MAX:
            raise ValueError(f"the UART socket path {self.socket} is over {UNIX_PATH_MAX} bytes")
        self.gateway = Gateway(UartAddress(path=str(self.socket)), uplink, reconnect_delay=0.02)
        self.runs: list[PowerOn] = []
        self._thread: threading.Thread | None = None

    @property
    def stats(self) -> GatewayStats:
        return self.gateway.stats

    def start_gateway(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.gateway.run, name=f"gateway-{self.name}", daemon=True
            )
            self._thread.start()

    def power_on(self) -> PowerOn:
        """A new QEMU process on the flash file; it waits for the gateway to connect."""
        if self.runs and self.runs[-1].proc.poll() is None:
            raise RuntimeError(f"{self.name} is already powered on")
        self.socket.unlink(missing_ok=True)
        console = self.folder / f"console-{len(self.runs)}.log"
        args = [*QEMU, "-serial", f"unix:{self.socket},server=on", "-kernel", str(self.boot_elf)]
        with console.open("wb") as err:
            proc = subprocess.Popen(
                args,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        run = PowerOn(proc, console)
        self.runs.append(run)
        self.start_gateway()
        return run

    def power_cycle(self) -> PowerOn:
        """Kill the running QEMU (power lost) and start another on the same flash."""
        if self.runs:
            self.runs[-1].kill()
        return self.power_on()

    def stop(self, timeout: float = 10.0) -> None:
        if self.runs:
            self.runs[-1].kill()
        self.gateway.stop()
        if self._thread is not None:
            self._thread.join(timeout)


class QemuFleet:
    """Devices ``names`` under ``root``, each with ``flash(name)`` as its first flash file and
    a gateway to ``uplink(name)``."""

    def __init__(
        self,
        root: Path,
        boot_elf: Path,
        names: list[str],
        flash: Callable[[str], bytes],
        uplink: Callable[[str], Uplink],
    ) -> None:
        self.devices: dict[str, QemuDevice] = {}
        for name in names:
            device = QemuDevice(name, root / name, boot_elf, uplink(name))
            (device.folder / "flash.bin").write_bytes(flash(name))
            self.devices[name] = device

    def __enter__(self) -> QemuFleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def power_on(self) -> None:
        for device in self.devices.values():
            device.power_on()

    def wait(self, timeout: float) -> dict[str, int | None]:
        """Each device's exit status once all have exited, or None for those still running
        when ``timeout`` seconds have passed (they keep running)."""
        deadline = time.monotonic() + timeout
        return {
            name: d.runs[-1].wait(max(0.0, deadline - time.monotonic())) if d.runs else None
            for name, d in self.devices.items()
        }

    def stop(self) -> None:
        for device in self.devices.values():
            device.stop()
