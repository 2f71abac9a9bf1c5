"""HTTP delivery benchmark: the transport against a bare endpoint of the same server, the
transport before issue 12 (``http.server``), uvicorn, and ``serve``'s start-up.

Publishes a 128 KiB firmware to an OCI image layout directory (the embedded default source)
for a fleet whose devices have passwords, then measures, in one run:

1. **Round trips/s over HTTP** for 1, 8 and 64 concurrent simulated devices, each with its
   own keep-alive connection, in a closed loop: ``POST /v1/dfu`` with its status (basic
   auth ``dev<i>@app``), read the command, apply it, repeat (a device that reaches Sync
   starts over, so nearly every reply is a 512-byte Write). Responders, each in a process
   of its own (``benchmarks/delivery_http_servers.py``): **transport** (the real
   ``HttpTransport`` + ``Worker``), **bare** (the same server answering a constant Write of
   the worker's size: the baseline), **legacy** (the ``ThreadingHTTPServer`` transport
   before issue 12, same worker) and **uvicorn** (a plain ASGI app answering the same
   constant). The devices run on one asyncio loop in the benchmark process with a minimal
   HTTP/1.1 client, the same for every responder. Best of ``--repeats`` windows of
   ``--seconds`` each, after 0.5 s of warm-up, responders in rotating order. Server CPU
   per round trip is read from ``/proc``.
2. **Start-up**: ``import delivery.cli`` and ``import h11`` / ``import uvicorn`` in a fresh
   interpreter, and ``ajour-delivery serve --http`` from exec to its first answer on
   ``GET /v1/status`` (median of ``--startup-runs``). ``--startup-tree DIR`` measures
   another checkout's serve the same way (e.g. the code before a change).

Takes about a minute and a half on a 2-core machine.

    python benchmarks/delivery_http.py [--seconds 2] [--repeats 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose delivery.py shadows the package


import uvicorn  # noqa: E402

from benchmarks.delivery_fixtures import (  # noqa: E402
    APP,
    FLEET_DEVICES,
    IMAGE_SIZE,
    MTU,
    START,
    prepare,
    process_cpu,
)
from benchmarks.delivery_http_servers import (  # noqa: E402
    KINDS,
    PASSWORD,
    Responder,
    fleet_with_passwords,
)
from delivery.device import SimulatedDevice  # noqa: E402
from delivery.protocol import decode_command, encode_status  # noqa: E402
from tests.registry import free_port  # noqa: E402

CONCURRENCY = (1, 8, 64)
WARMUP_S = 0.5
TIMES = "\N{MULTIPLICATION SIGN}"


class Device:
    """One simulated device on its own keep-alive connection."""

    def __init__(self, port: int, name: str) -> None:
        self.port, self.name = port, name
        token = base64.b64encode(f"{name}@{APP}:{PASSWORD}".encode()).decode()
        self.head = (
            f"POST /v1/dfu?ct=30 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {token}\r\n"
            "Content-Type: application/cbor\r\nContent-Length: "
        ).encode()
        self.device = SimulatedDevice(START, MTU)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        status = encode_status(self.device.status())
        self.writer.write(self.head + str(len(status)).encode() + b"\r\n\r\n" + status)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"{self.name}: {head[:200]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        self.device.apply(decode_command(await self.reader.readexactly(length)))
        if self.device.synced:
            self.device = SimulatedDevice(START, MTU)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _window(
    port: int, pid: int | None, devices: int, seconds: float
) -> tuple[int, float, list[float], float, float]:
    fleet = [Device(port, f"dev{i}") for i in range(devices)]
    latencies: list[float] = []
    state = {"record": False, "done": 0, "running": True}

    async def loop(device: Device) -> None:
        while state["running"]:
            started = time.perf_counter()
            await device.exchange()
            if state["record"]:
                latencies.append(time.perf_counter() - started)
                state["done"] += 1

    tasks = [asyncio.create_task(loop(d)) for d in fleet]
    try:
        await asyncio.sleep(WARMUP_S)
        state["record"] = True
        started, cpu, client = time.perf_counter(), process_cpu(pid), time.process_time()
        await asyncio.sleep(seconds)
        state["record"] = False
        wall = time.perf_counter() - started
        cpu, client = process_cpu(pid) - cpu, time.process_time() - client
        state["running"] = False
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    finally:
        for task in tasks:
            task.cancel()
        for d in fleet:
            d.close()
    return int(state["done"]), wall, latencies, cpu, client


def window(responder: Responder, devices: int, seconds: float) -> dict[str, Any]:
    trips, wall, lat, cpu, client = asyncio.run(
        _window(responder.port, responder.pid, devices, seconds)
    )
    lat.sort()
    return {
        "responder": responder.kind,
        "devices": devices,
        "round_trips": trips,
        "round_trips_per_s": trips / wall,
        "latency_ms": {
            "p50": statistics.median(lat) * 1e3 if lat else 0.0,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3 if lat else 0.0,
        },
        "server_cpu_us_per_trip": cpu / max(trips, 1) * 1e6,
        "server_busy": cpu / wall,
        "client_busy": client / wall,
    }


def round_trips(root: Path, seconds: float, repeats: int) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for rep in range(repeats):
        order = KINDS[rep % len(KINDS) :] + KINDS[: rep % len(KINDS)]
        for kind in order:
            responder = Responder(ctx, kind, root)
            try:
                for devices in CONCURRENCY:
                    got = window(responder, devices, seconds)
                    key = (kind, devices)
                    if key not in best or got["round_trips_per_s"] > best[key]["round_trips_per_s"]:
                        best[key] = got
            finally:
                responder.close()
    rows = []
    for devices in CONCURRENCY:
        bare = best[("bare", devices)]["round_trips_per_s"]
        row: dict[str, Any] = {"devices": devices}
        for kind in KINDS:
            cell = best[(kind, devices)]
            cell["ratio_to_bare"] = cell["round_trips_per_s"] / bare
            row[kind] = cell
        rows.append(row)
    return rows


def _time(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def _serve_ready(tree: Path, root: Path) -> float:
    """Seconds from exec of ``serve --http`` to its first 200 on GET /v1/status."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, "-m", "delivery.cli", "serve", "--http", f"127.0.0.1:{port}"]
    args += ["--fleet", str(root / "fleet"), "--registry", f"oci-layout://{root / 'oci'}"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*args, "--insecure-no-auth"],
        env=env,
        cwd=tree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve from {tree} exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=2):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait(15)


def startup(root: Path, runs: int, other: Path | None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    py = [sys.executable, "-c"]

    def median(args: list[str]) -> float:
        return statistics.median(_time(args, env) for _ in range(runs)) * 1e3

    empty = median([*py, "pass"])
    out: dict[str, Any] = {
        "python_ms": empty,
        "import_delivery_cli_ms": median([*py, "import delivery.cli"]) - empty,
        "import_delivery_http_ms": median([*py, "import delivery.http"]) - empty,
        "import_h11_ms": median([*py, "import h11"]) - empty,
        "import_uvicorn_ms": median([*py, "import uvicorn"]) - empty,
        "serve_ready_ms": statistics.median(_serve_ready(REPO, root) for _ in range(runs)) * 1e3,
    }
    if other is not None:
        out["other_tree"] = str(other)
        out["other_serve_ready_ms"] = (
            statistics.median(_serve_ready(other, root) for _ in range(runs)) * 1e3
        )
    return out


def run(seconds: float, repeats: int, runs: int, other: Path | None) -> dict[str, Any]:
    started = time.perf_counter()
    info = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "h11": importlib.metadata.version("h11"),
        "uvicorn": uvicorn.__version__,
        "loadavg_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="ajour-bench-http-") as name:
        root = Path(name)
        prepare(root, FLEET_DEVICES)
        fleet_with_passwords(root, FLEET_DEVICES)
        rows = round_trips(root, seconds, repeats)
        boot = startup(root, runs, other)
    info["loadavg_end"] = os.getloadavg()
    return {
        "benchmark": "delivery_http",
        "machine": info,
        "settings": {"image_bytes": IMAGE_SIZE, "mtu": MTU, "seconds": seconds, "repeats": repeats},
        "round_trips": rows,
        "startup": boot,
        "wall_seconds": time.perf_counter() - started,
    }


def print_table(report: dict[str, Any]) -> None:
    m, s = report["machine"], report["settings"]
    print(
        f"machine: {m['nproc']} CPUs, CPython {m['python']}, h11 {m['h11']}, uvicorn"
        f" {m['uvicorn']}; load average {m['loadavg_start'][0]:.2f} at the start,"
        f" {m['loadavg_end'][0]:.2f} at the end"
    )
    print(
        f"\n1. status→command round trips/s over HTTP, best of {s['repeats']} x {s['seconds']} s;"
        " one keep-alive connection per device; ratio = rt/s / bare's"
    )
    print(f"{'dev':>4}  {'responder':<10}{'rt/s':>8}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'server µs/rt':>14}{'server busy':>13}{'client busy':>13}")  # fmt: skip
    for row in report["round_trips"]:
        for kind in KINDS:
            c = row[kind]
            print(
                f"{row['devices']:>4}  {kind:<10}{c['round_trips_per_s']:>8.0f}"
                f"{c['ratio_to_bare']:>7.2f}{TIMES}{c['latency_ms']['p50']:>9.2f}"
                f"{c['latency_ms']['p99']:>9.2f}{c['server_cpu_us_per_trip']:>14.0f}"
                f"{c['server_busy']:>13.2f}{c['client_busy']:>13.2f}"
            )
    b = report["startup"]
    print(
        f"\n2. start-up (median): python itself {b['python_ms']:.0f} ms; on top of it:"
        f" import delivery.cli {b['import_delivery_cli_ms']:.0f} ms, delivery.http"
        f" {b['import_delivery_http_ms']:.0f} ms, h11 {b['import_h11_ms']:.0f} ms, uvicorn"
        f" {b['import_uvicorn_ms']:.0f} ms"
    )
    print(f"   serve --http: exec to first answer {b['serve_ready_ms']:.0f} ms")
    if "other_tree" in b:
        print(f"   the same from {b['other_tree']}: {b['other_serve_ready_ms']:.0f} ms")
    print(f"\nwhole run {report['wall_seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per window")
    parser.add_argument("--repeats", type=int, default=2, help="windows per cell (best kept)")
    parser.add_argument("--startup-runs", type=int, default=5, help="runs per start-up figure")
    parser.add_argument("--startup-tree", type=Path, help="also time serve from this checkout")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    if args.repeats < 1 or not 0.2 <= args.seconds <= 30 or args.startup_runs < 1:
        parser.error("--repeats and --startup-runs >= 1, --seconds between 0.2 and 30")
    report = run(args.seconds, args.repeats, args.startup_runs, args.startup_tree)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
