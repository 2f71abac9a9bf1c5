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
even share.

    python benchmarks/delivery_multinode.py [--nodes 2] [--workers 2] [--devices 64]
                                            [--seconds 3] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
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


def run(nodes: int, workers: int, devices: int, seconds: float, repeats: int) -> dict[str, Any]:
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
    for line in missed(report):
        print(f"MISSED: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=2, help="broker nodes (multi)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--devices", type=int, default=64, help="devices in closed loops")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per window")
    parser.add_argument("--repeats", type=int, default=3, help="windows per configuration")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= 8 or args.workers < 1 or args.devices < args.nodes:
        parser.error("--nodes between 2 and 8, --workers at least 1, --devices >= --nodes")
    if args.repeats < 1 or not 0.5 <= args.seconds <= 30:
        parser.error("--repeats at least 1, --seconds between 0.5 and 30")
    report = run(args.nodes, args.workers, args.devices, args.seconds, args.repeats)
    report["missed"] = missed(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 1 if report["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
