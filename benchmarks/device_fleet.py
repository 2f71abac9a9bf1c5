"""QEMU device fleet benchmark: emulated devices update 1.0.0 -> 1.1.0 together, for real.

Each device is QEMU's mps2-an385 running the bootloader (``device/boot``, with an ed25519
key) and the C updater (``app/device.c``) on its own flash file, its UART relayed by its own
``delivery.gateway.Gateway`` (a thread of this process, as ``ajour-delivery gateway`` runs
it) to one worker's HTTP transport in this process (``ajour_devices``). The image is the
device application itself, signed: about 5 KB, 6 Writes at the device's mtu of 968.

For each fleet size (``--sizes``, default 1,20,50; the single device is the baseline, in
the same run) it measures, from the first power-on until every device has exited synced
on 1.1.0 (two boots each: the download, Swap, reset, trial boot, Sync and confirm):

* **wall** time, and each device's own time from its power-on (median, max);
* **round trips** per device (status in, command out, counted by its gateway) and the time
  the gateway waited for the worker's answer per round trip (mean);
* **bytes on the UARTs** (status and command frames with their markers, COBS and CRC, both ways)
  against the image bytes the devices received;
* **CPU**: the QEMU processes' (``RUSAGE_CHILDREN``) and this process's (the gateways and
  the worker), per device.

    python benchmarks/device_fleet.py [--sizes 1,20,50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ajour_devices.firmware import build_device_firmware, flash
from ajour_devices.qemu import QemuFleet
from ajour_devices.server import image, serving
from delivery.gateway import HttpUplink


@dataclass
class TimedUplink:
    """An uplink that keeps how long each exchange with the worker took."""

    inner: HttpUplink
    seconds: list[float] = field(default_factory=list)

    def exchange(self, status: bytes) -> bytes:
        started = time.perf_counter()
        try:
            return self.inner.exchange(status)
        finally:
            self.seconds.append(time.perf_counter() - started)

    def close(self) -> None:
        self.inner.close()


def cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of the finished children, and of this process."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return kids.ru_utime + kids.ru_stime, own.ru_utime + own.ru_stime


def measure(build: Path, size: int, tmp: Path, timeout: float) -> dict[str, Any]:
    old, new = image(build, "1.0.0"), image(build, "1.1.0")
    names = [f"dev{i}" for i in range(size)]
    uplinks: dict[str, TimedUplink] = {}
    with serving(tmp / "worker", names, "1.1.0", new) as served:

        def uplink(name: str) -> TimedUplink:
            uplinks[name] = TimedUplink(served.uplink(name))
            return uplinks[name]

        with QemuFleet(
            tmp / "devices", build / "boot.elf", names, lambda _: flash(old), uplink
        ) as fleet:
            kids0, own0 = cpu()
            started = time.monotonic()
            fleet.power_on()
            codes = fleet.wait(timeout)
            wall = time.monotonic() - started
            fleet.stop()
            kids1, own1 = cpu()
            synced = sum(
                1
                for d in fleet.devices.values()
                if d.runs[-1].lines()[-1:] == ["app: synced 1.1.0"]
            )
            failed = {n: c for n, c in codes.items() if c != 0}
            devices = list(fleet.devices.values())
    trips = [d.stats.replies for d in devices]
    exchange = [s for u in uplinks.values() for s in u.seconds]
    run_seconds = [d.runs[-1].seconds for d in devices]
    wire = sum(d.stats.bytes_in + d.stats.bytes_out for d in devices)
    return {
        "devices": size,
        "wall_s": round(wall, 3),
        "device_s_median": round(statistics.median(run_seconds), 3),
        "device_s_max": round(max(run_seconds), 3),
        "round_trips_per_device": round(statistics.mean(trips), 2),
        "round_trips_max": max(trips),
        "worker_ms_per_round_trip": round(1000 * statistics.mean(exchange), 2),
        "status_bytes": sum(d.stats.bytes_in for d in devices),
        "command_bytes": sum(d.stats.bytes_out for d in devices),
        "image_bytes": len(new),
        "wire_over_image": round(wire / (size * len(new)), 3),
        "qemu_cpu_s_per_device": round((kids1 - kids0) / size, 3),
        "gateway_worker_cpu_s_per_device": round((own1 - own0) / size, 3),
        "synced": synced,
        "failed": failed,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| devices | wall | per device (median / max) | round trips per device | worker per"
        " round trip | status + command bytes | / image bytes | QEMU CPU per device |"
        " gateway + worker CPU per device |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['devices']} | {r['wall_s']:.2f} s | {r['device_s_median']:.2f} /"
            f" {r['device_s_max']:.2f} s | {r['round_trips_per_device']:g} |"
            f" {r['worker_ms_per_round_trip']:.2f} ms | {r['status_bytes']} +"
            f" {r['command_bytes']} | {r['wire_over_image']:.3f}x of {r['image_bytes']} B |"
            f" {r['qemu_cpu_s_per_device']:.3f} s | {r['gateway_worker_cpu_s_per_device']:.3f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1,20,50", help="comma-separated fleet sizes")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per fleet")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ajour-devices-") as tmp:
        build = build_device_firmware(Path(tmp) / "build", ("1.0.0", "1.1.0"))
        for size in sizes:
            rows.append(measure(build, size, Path(tmp) / f"fleet-{size}", args.timeout))
    ok = all(r["synced"] == r["devices"] and not r["failed"] for r in rows)
    if args.json:
        report = {"python": platform.python_version(), "load": load, "rows": rows, "ok": ok}
        print(json.dumps(report, indent=2))
    else:
        print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {load:.2f}")
        print(table(rows))
        for r in rows:
            if r["failed"] or r["synced"] != r["devices"]:
                print(f"{r['devices']} devices: {r['synced']} synced, failed: {r['failed']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
