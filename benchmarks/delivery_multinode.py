"""Delivery on several MQTT broker nodes against one node, in the same run.

Starts ``--nodes`` independent mosquittos (no bridge; the configuration of
``benchmarks/delivery_fixtures.broker``, with ``set_tcp_nodelay true``) and ``--workers``
worker processes (the real ``MqttTransport`` + ``Worker`` over an OCI layout directory with a
128 KiB image), each joined to the shared subscription on every node, as ``serve --mqtt A
--mqtt B …`` does. Simulated devices run closed loops (status, command, apply, repeat; a
device that reaches Sync starts over, so nearly every reply is a 512-byte Write: the
regime of an update), spread evenly over the nodes, one gateway connection per node
(``benchmarks/delivery_round_trips.Gateway``), all in this process. QoS 1, as ``serve``.

Two configurations, alternating, best of ``--repeats`` windows of ``--seconds`` each:

* **single**: one node, the same workers, all devices on it;
* **multi**: ``--nodes`` nodes, the devices spread evenly.

Reported: round trips/s in total and per node, multi/single, and the CPU time per round
trip of the brokers, the workers and the device side (the driver): what each part costs,
which is what the extrapolation to a large fleet needs. Every process shares the same
cores, so on a small machine the total is bounded by the CPU of all parts together, not by
a node: the ratio then shows what several nodes cost, not what they gain.

The exit status is 1 if a device got an answer it did not ask for (``duplicates``), a
status was left unanswered at the end of a window, or one node carried less than 0.8 of its
even share. Last, ``--connections`` idle device connections (raw MQTT 3.1.1, one QoS 1
subscription each) are opened to one node, for the broker's memory per device connection.

    python benchmarks/delivery_multinode.py [--nodes 2] [--workers 2] [--devices 64]
                                            [--seconds 3] [--repeats 3]
                                            [--connections 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import struct
import sys
import tempfile
import time
from contextlib import ExitStack
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose delivery.py shadows the package

from benchmarks.delivery_fixtures import (  # noqa: E402
    IMAGE_SIZE,
    MTU,
    broker,
    find_pid,
    prepare,
    process_cpu,
)
from benchmarks.delivery_responders import SETTLE_S, handled, make_worker  # noqa: E402
from benchmarks.delivery_round_trips import WARMUP_S, Gateway  # noqa: E402
from delivery.mqtt import MqttSettings, MqttTransport  # noqa: E402

QOS = 1
SHARE_GOAL = 0.8  # each node carries at least this fraction of its even share


def _packet(kind: int, body: bytes) -> bytes:
    assert len(body) < 128  # a one-byte remaining length
    return bytes([kind, len(body)]) + body


def _text(value: str) -> bytes:
    return struct.pack(">H", len(value)) + value.encode()


def rss_kib(pid: int | None) -> int:
    """Resident memory of ``pid`` in KiB (0 if unknown)."""
    if pid is None:
        return 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def connection_memory(port: int, pid: int | None, count: int) -> dict[str, Any]:
    """What ``count`` idle device connections cost the broker: each a raw MQTT 3.1.1
    CONNECT (clean session, keep-alive 60 s) and a QoS 1 subscription to its own command
    topic, as a device of ``--mqtt-connection device`` holds between statuses."""
    before = rss_kib(pid)
    started = time.perf_counter()
    sockets = []
    try:
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sockets.append(sock)
            hello = _text("MQTT") + bytes([4, 2]) + struct.pack(">H", 60) + _text(f"c{i}")
            subscribe = struct.pack(">H", 1) + _text(f"ajour/app/dev{i}/dfu/cmd") + b"\x01"
            sock.sendall(_packet(0x10, hello) + _packet(0x82, subscribe))
            got = b""
            while len(got) < 9:  # CONNACK (4 bytes) and SUBACK (5)
                chunk = sock.recv(9 - len(got))
                if not chunk:
                    raise SystemExit(f"mosquitto closed connection {i}")
                got += chunk
            if got[3] != 0 or got[8] != 1:
                raise SystemExit(f"mosquitto refused connection {i}: {got.hex()}")
        seconds = time.perf_counter() - started
        time.sleep(0.5)
        after = rss_kib(pid)
    finally:
        for sock in sockets:
            sock.close()
    return {
        "connections": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": (after - before) / count if count else 0.0,
        "connect_and_subscribe_per_s": count / seconds if seconds else 0.0,
    }


def serve_worker(ports: list[int], root: str, conn: Connection) -> None:
    """A worker process joined to the group on every node in ``ports``."""
    worker = make_worker(Path(root))
    transports = [
        MqttTransport(worker, MqttSettings(url=f"mqtt://127.0.0.1:{port}", qos=QOS))
        for port in ports
    ]
    for transport in transports:
        transport.start()
    time.sleep(SETTLE_S)
    conn.send("ready")
    for _ in range(10_000):  # bounded: a run asks a few dozen times
        if not conn.poll(600):
            break
        request = conn.recv()
        count, _seconds = handled(worker)
        conn.send({"cpu_s": time.process_time(), "handled": count})
        if request == "stop":
            break
    for transport in transports:
        transport.stop()


class WorkerProcess:
    def __init__(self, ctx: SpawnContext, ports: list[int], root: Path) -> None:
        self.conn, child = ctx.Pipe()
        self.proc: SpawnProcess = ctx.Process(
            target=serve_worker, args=(ports, str(root), child), daemon=True
        )
        self.proc.start()
        child.close()
        if not self.conn.poll(60) or self.conn.recv() != "ready":
            self.close()
            raise SystemExit("a worker process did not start")

    def stats(self, request: str = "stats") -> dict[str, Any]:
        self.conn.send(request)
        if not self.conn.poll(30):
            raise SystemExit("a worker process stopped answering")
        got: dict[str, Any] = self.conn.recv()
        return got

    def close(self) -> None:
        try:
            self.stats("stop")
        except (OSError, EOFError, SystemExit):
            pass
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


def snapshot(
    gateways: list[Gateway], workers: list[WorkerProcess], brokers: list[int | None]
) -> dict[str, Any]:
    stats = [w.stats() for w in workers]
    return {
        "wall": time.perf_counter(),
        "per_node": [g.completed for g in gateways],
        "worker_cpu": sum(s["cpu_s"] for s in stats),
        "handled": sum(s["handled"] for s in stats),
        "driver_cpu": time.process_time(),
        "broker_cpu": sum(process_cpu(pid) for pid in brokers),
    }


def window(
    ctx: SpawnContext,
    ports: list[int],
    pids: list[int | None],
    root: Path,
    workers: int,
    devices: int,
    seconds: float,
) -> dict[str, Any]:
    """``devices`` closed loops spread over the nodes ``ports`` for ``seconds``."""
    names = [f"dev{i}" for i in range(devices)]
    with ExitStack() as stack:
        procs = []
        for _ in range(workers):
            proc = WorkerProcess(ctx, ports, root)
            stack.callback(proc.close)
            procs.append(proc)
        gateways = []
        for i, port in enumerate(ports):
            gateway = Gateway(port, names[i :: len(ports)], QOS)
            stack.callback(gateway.close)
            gateways.append(gateway)
        for gateway in gateways:
            gateway.kick()
        time.sleep(WARMUP_S)
        a = snapshot(gateways, procs, pids)
        time.sleep(seconds)
        b = snapshot(gateways, procs, pids)
        unanswered = sum(g.stop() for g in gateways)
        duplicates = sum(g.duplicates for g in gateways)
    wall = b["wall"] - a["wall"]
    per_node = [y - x for x, y in zip(a["per_node"], b["per_node"], strict=True)]
    trips = sum(per_node)

    def per_trip_us(key: str) -> float:
        return (b[key] - a[key]) / trips * 1e6 if trips else 0.0

    return {
        "nodes": len(ports),
        "round_trips_per_s": trips / wall,
        "per_node_per_s": [n / wall for n in per_node],
        "handled_per_s": (b["handled"] - a["handled"]) / wall,
        "cpu_us_per_trip": {
            "brokers": per_trip_us("broker_cpu"),
            "workers": per_trip_us("worker_cpu"),
            "driver": per_trip_us("driver_cpu"),
        },
        "cpu_busy": {
            "brokers": (b["broker_cpu"] - a["broker_cpu"]) / wall,
            "workers": (b["worker_cpu"] - a["worker_cpu"]) / wall,
            "driver": (b["driver_cpu"] - a["driver_cpu"]) / wall,
        },
        "duplicates": duplicates,
        "unanswered": unanswered,
    }


def run(
    nodes: int, workers: int, devices: int, seconds: float, repeats: int, connections: int
) -> dict[str, Any]:
    started = time.perf_counter()
    load_start = os.getloadavg()
    ctx = multiprocessing.get_context("spawn")
    best: dict[str, dict[str, Any]] = {}
    bad: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ajour-bench-multinode-") as tmp_name:
        tmp = Path(tmp_name)
        prepare(tmp, devices)
        with ExitStack() as stack:
            ports = [stack.enter_context(broker(tmp / f"node{i}", True)) for i in range(nodes)]
            pids = [find_pid(str(tmp / f"node{i}" / "mosquitto.conf")) for i in range(nodes)]
            for rep in range(repeats):
                order = ("single", "multi") if rep % 2 == 0 else ("multi", "single")
                for kind in order:
                    n = 1 if kind == "single" else nodes
                    got = window(ctx, ports[:n], pids[:n], tmp, workers, devices, seconds)
                    if got["duplicates"] or got["unanswered"]:
                        bad.append(got)
                    if (
                        kind not in best
                        or got["round_trips_per_s"] > best[kind]["round_trips_per_s"]
                    ):
                        best[kind] = got
            memory = connection_memory(ports[-1], pids[-1], connections) if connections else None
    single, multi = best["single"], best["multi"]
    even = multi["round_trips_per_s"] / nodes
    return {
        "benchmark": "delivery_multinode",
        "machine": {"nproc": os.cpu_count(), "loadavg_start": load_start},
        "settings": {
            "nodes": nodes,
            "workers": workers,
            "devices": devices,
            "image_bytes": IMAGE_SIZE,
            "mtu": MTU,
            "qos": QOS,
            "seconds_per_window": seconds,
            "repeats": repeats,
        },
        "single": single,
        "multi": multi,
        "ratio_multi_to_single": multi["round_trips_per_s"] / single["round_trips_per_s"],
        "node_share_of_even": [rate / even for rate in multi["per_node_per_s"]],
        "troubled_windows": bad,
        "idle_connections": memory,
        "loadavg_end": os.getloadavg(),
        "wall_seconds": time.perf_counter() - started,
    }


def missed(report: dict[str, Any]) -> list[str]:
    out = [
        f"a window had {w['duplicates']} duplicate answers and {w['unanswered']} unanswered"
        f" statuses ({w['nodes']} nodes)"
        for w in report["troubled_windows"]
    ]
    shares = report["node_share_of_even"]
    if min(shares) < SHARE_GOAL:
        out.append(f"uneven nodes: shares of the even load {shares} (goal >= {SHARE_GOAL})")
    return out


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"{s['workers']} worker processes, {s['devices']} devices in closed loops, QoS"
        f" {s['qos']}, mtu {s['mtu']}; best of {s['repeats']} x {s['seconds_per_window']} s;"
        f" load average {report['machine']['loadavg_start'][0]:.2f} at the start,"
        f" {report['loadavg_end'][0]:.2f} at the end ({report['machine']['nproc']} CPUs)"
    )
    print(f"{'':8} {'rt/s':>8}  {'per node':<20} {'CPU µs per round trip: brokers/workers/driver'}")
    for kind in ("single", "multi"):
        row = report[kind]
        nodes = " / ".join(f"{r:,.0f}" for r in row["per_node_per_s"])
        cpu = row["cpu_us_per_trip"]
        print(
            f"{kind:8} {row['round_trips_per_s']:8,.0f}  {nodes:<20}"
            f" {cpu['brokers']:.0f} / {cpu['workers']:.0f} / {cpu['driver']:.0f}"
        )
    print(f"multi / single: {report['ratio_multi_to_single']:.2f}")
    memory = report["idle_connections"]
    if memory:
        print(
            f"{memory['connections']:,} idle device connections (one subscription each):"
            f" {memory['kib_per_connection']:.1f} KiB of mosquitto RSS each"
            f" ({memory['rss_before_kib']:,} -> {memory['rss_after_kib']:,} KiB),"
            f" {memory['connect_and_subscribe_per_s']:,.0f} connect+subscribe/s"
        )
    for line in missed(report):
        print(f"MISSED: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=2, help="broker nodes (multi)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--devices", type=int, default=64, help="devices in closed loops")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per window")
    parser.add_argument("--repeats", type=int, default=3, help="windows per configuration")
    parser.add_argument(
        "--connections",
        type=int,
        default=5000,
        help="idle device connections to measure the broker's memory with (0: skip)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= 8 or args.workers < 1 or args.devices < args.nodes:
        parser.error("--nodes between 2 and 8, --workers at least 1, --devices >= --nodes")
    if args.repeats < 1 or not 0.5 <= args.seconds <= 30 or not 0 <= args.connections <= 15000:
        parser.error("--repeats at least 1, --seconds between 0.5 and 30, --connections <= 15000")
    report = run(
        args.nodes, args.workers, args.devices, args.seconds, args.repeats, args.connections
    )
    report["missed"] = missed(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 1 if report["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
