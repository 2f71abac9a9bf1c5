"""Delivery benchmark: the MQTT worker against a raw echo, a fleet update, the codec.

Starts mosquitto on a free loopback port (the configuration of ``tests/broker.py`` plus
``set_tcp_nodelay true``; ``--broker-nagle`` leaves that line out) and publishes a 128 KiB
firmware to an OCI image layout directory (the embedded default source), then measures, in
one run:

1. **Round trips/s over MQTT**, QoS 0 and QoS 1, for 1, 8 and 64 concurrent simulated
   devices. Each device runs a closed loop: send its status, wait for its command, apply it,
   repeat (a device that reaches Sync starts over, so nearly every reply is a 512-byte
   Write). Responders, each in a process of its own and subscribed the same way (shared
   subscription ``$share/ajour/ajour/+/+/dfu``, TCP_NODELAY, one paho client):

   * **worker**: the real ``MqttTransport`` + ``Worker`` over the OCI layout directory,
     with an in-memory status store (the ``serve`` default);
   * **echo (baseline)**: a trivial paho client that answers every status with a constant
     payload of the worker's Write size on ``<status topic>/cmd``.

   Devices live in the benchmark process behind one shared paho gateway client (one TCP
   connection, as ``simulate_mqtt`` and the drgdfu gateway do), for worker and echo alike.
   Best of ``--repeats`` windows of ``--seconds`` each (after 0.5 s of warm-up), worker and
   echo alternating. CPU time per round trip is reported for the responder, its
   ``Worker.handle``, mosquitto and the device side, to show where the time goes.
2. **Fleet update**: 200 devices updating to the 128 KiB image at mtu 512 with
   ``delivery.mqtt_simulator.simulate_mqtt`` (QoS 1): wall time, payload bytes exchanged (from
   the encoded size of every message, replayed and checked against the run), and the ideal
   (image plus the minimum framing of every Write, plus the final Swap and Sync).
3. **Codec and decision**: ns/op of encode/decode for a 512-byte Write and a Status with
   update, ``decide()``, Write framing bytes; and ``Worker.handle`` taken apart piece by
   piece (what the worker process spends per message).

4. **Fleet scale** (``benchmarks/fleet_scale.py --json``, run as a subprocess): time and
   peak memory until one worker answers, for 10k, 100k and 1M devices, against libyaml.
5. **HTTP transport** (``benchmarks/delivery_http.py --json``, a subprocess): round trips/s
   of the real HTTP transport against a bare endpoint of the same server.

It is the delivery gate: the exit status is 1 when a goal is missed, and the misses are
listed last. The goals: the worker at least 0.9x the echo in every MQTT cell (QoS 0 and 1,
1/8/64 devices); 100k devices ready in under 3 s within 200 MB; 1M devices no worse than
1.5x the 100k figures per device (time and memory: "about linear"); the HTTP transport at
least 0.5x its bare endpoint at every concurrency. ``--skip fleet,http`` leaves parts out
(their goals are then not judged).

Takes about 6 minutes on a 2-core machine with every part (1.5 without fleet and http).

    python benchmarks/delivery.py [--seconds 2] [--repeats 3] [--skip fleet,http]
                                  [--no-million] [--broker-nagle] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose delivery.py is this file

import paho.mqtt  # noqa: E402

from benchmarks.delivery_codec import codec, handle_parts  # noqa: E402
from benchmarks.delivery_fixtures import (  # noqa: E402
    FLEET_DEVICES,
    IMAGE_SIZE,
    KIB,
    MTU,
    broker,
    find_pid,
    prepare,
)
from benchmarks.delivery_fleet import fleet_update  # noqa: E402
from benchmarks.delivery_responders import echo_payload  # noqa: E402
from benchmarks.delivery_round_trips import WARMUP_S, round_trips  # noqa: E402
from tests.broker import MOSQUITTO  # noqa: E402

GOAL = 0.9  # worker / echo, every MQTT cell
HTTP_GOAL = 0.5  # HTTP transport / its bare endpoint, every concurrency
LINEAR_GOAL = 1.5  # 1M per device / 100k per device, time and memory
PARTS = ("fleet", "http")
TIMES = "\N{MULTIPLICATION SIGN}"


def machine() -> dict[str, Any]:
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5)
        broker = (out.stdout or out.stderr).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        broker = "?"
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "paho_mqtt": paho.mqtt.__version__,
        "mosquitto": broker,
        "loadavg_start": os.getloadavg(),
    }


def subprocess_report(script: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``benchmarks/<script> --json`` in a fresh interpreter and return its report."""
    cmd = [sys.executable, str(REPO / "benchmarks" / script), "--json", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"{script} exited {done.returncode}: {' / '.join(tail)}"}
    return report


def goals(report: dict[str, Any]) -> list[str]:
    """The goals this run missed, each said in one line."""
    missed = [
        f"MQTT QoS {r['qos']}, {r['devices']} devices: worker/echo {r['ratio']:.2f} < {GOAL}"
        for r in report["round_trips"]
        if r["ratio"] < GOAL
    ]
    fleet = report.get("fleet_scale")
    if fleet is not None:
        if "error" in fleet:
            missed.append(f"fleet scale: {fleet['error']}")
        else:
            by_size = {row["devices"]: row["worker"] for row in fleet["rows"]}
            hundred = by_size.get(100_000)
            if fleet["goal_met"] is False or hundred is None:
                missed.append(
                    f"fleet scale: 100k devices not ready in < 3 s within 200 MB ({hundred})"
                )
            million = by_size.get(1_000_000)
            if hundred and million and hundred["seconds"] and million["seconds"]:
                time_ratio = (million["seconds"] / 1e6) / (hundred["seconds"] / 1e5)
                mem_ratio = (million["rss_mb"] / 1e6) / (hundred["rss_mb"] / 1e5)
                fleet["linearity"] = {"time": time_ratio, "memory": mem_ratio}
                if max(time_ratio, mem_ratio) > LINEAR_GOAL:
                    missed.append(
                        f"fleet scale: 1M per device is {time_ratio:.2f}{TIMES} the time and"
                        f" {mem_ratio:.2f}{TIMES} the memory of 100k (goal <= {LINEAR_GOAL})"
                    )
            elif million is not None:
                missed.append(f"fleet scale: the 1M fleet did not load ({million})")
    http = report.get("http")
    if http is not None:
        if "error" in http:
            missed.append(f"HTTP: {http['error']}")
        else:
            for row in http["round_trips"]:
                ratio = row["transport"]["ratio_to_bare"]
                if ratio < HTTP_GOAL:
                    missed.append(
                        f"HTTP, {row['devices']} devices: transport/bare {ratio:.2f} < {HTTP_GOAL}"
                    )
    return missed


def run(seconds: float, repeats: int, tcp_nodelay: bool) -> dict[str, Any]:
    started = time.perf_counter()
    info = machine()
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ajour-bench-delivery-") as tmp_name:
        tmp = Path(tmp_name)
        image = prepare(tmp, FLEET_DEVICES)
        with broker(tmp / "mqtt", tcp_nodelay) as port:
            pid = find_pid(str(tmp / "mqtt" / "mosquitto.conf"))
            rows = round_trips(ctx, port, tmp, seconds, repeats, pid)
            fleet = fleet_update(ctx, port, tmp, image, pid)
        parts = handle_parts(tmp)
        codec_result = codec(image)
    info["loadavg_end"] = os.getloadavg()
    return {
        "benchmark": "delivery",
        "machine": info,
        "settings": {
            "image_bytes": IMAGE_SIZE,
            "mtu": MTU,
            "seconds_per_window": seconds,
            "warmup_s": WARMUP_S,
            "repeats": repeats,
            "broker_set_tcp_nodelay": tcp_nodelay,
            "devices_structure": "one shared paho gateway client for all devices (both sides)",
            "responder_structure": "one paho client, own process, $share subscription",
            "echo_reply_bytes": len(echo_payload(image)),
        },
        "round_trips": rows,
        "goal": GOAL,
        "fleet_update": fleet,
        "worker_handle": parts,
        "codec": codec_result,
        "wall_seconds": time.perf_counter() - started,
    }


def print_round_trips(report: dict[str, Any]) -> None:
    s = report["settings"]
    nagle = "on (set_tcp_nodelay false)" if not s["broker_set_tcp_nodelay"] else "off"
    print(
        f"\n1. status→command round trips/s, best of {s['repeats']} x {s['seconds_per_window']} s;"
        f" replies {s['echo_reply_bytes']} B; devices on one gateway client;"
        f" broker Nagle {nagle}"
    )
    print(
        f"{'qos':>3}{'dev':>5}{'worker rt/s':>13}{'echo rt/s':>11}{'ratio':>8}"
        f"{'p50 ms w/e':>15}{'p99 ms w/e':>15}"
    )
    for r in report["round_trips"]:
        w, e = r["worker"], r["echo"]
        flag = "" if r["ratio"] >= report["goal"] else "  below goal"
        print(
            f"{r['qos']:>3}{r['devices']:>5}{w['round_trips_per_s']:>13.0f}"
            f"{e['round_trips_per_s']:>11.0f}{r['ratio']:>7.2f}{TIMES}"
            f"{w['latency_ms']['p50']:>9.2f}/{e['latency_ms']['p50']:<5.2f}"
            f"{w['latency_ms']['p99']:>9.2f}/{e['latency_ms']['p99']:<5.2f}{flag}"
        )
        problems = sum(x["unanswered"] + x["duplicates"] for x in (w, e))
        if problems:
            print(f"    WARNING: {problems} unanswered or duplicate replies in these windows")
    print(
        "\n   CPU µs per round trip (w = worker run, e = echo run); busy = responder CPU / wall;"
        " handle = µs in Worker.handle, from the worker's own latency histogram"
    )
    print(
        f"{'qos':>3}{'dev':>5}{'worker proc':>13}{'handle':>11}{'busy':>6}"
        f"{'echo proc':>11}{'busy':>6}{'broker w/e':>14}{'devices w/e':>14}"
    )
    for r in report["round_trips"]:
        w, e = r["worker"], r["echo"]
        wc, ec = w["cpu_us_per_trip"], e["cpu_us_per_trip"]
        print(
            f"{r['qos']:>3}{r['devices']:>5}{wc['responder']:>13.0f}{wc['handle']:>11.0f}"
            f"{w['responder_busy']:>6.2f}{ec['responder']:>11.0f}{e['responder_busy']:>6.2f}"
            f"{wc['broker']:>8.0f}/{ec['broker']:<5.0f}{wc['driver']:>8.0f}/{ec['driver']:<5.0f}"
        )
    print(f"   goal: worker / echo >= {report['goal']:.1f}")


def print_fleet(f: dict[str, Any]) -> None:
    b = f["bytes"]
    print(
        f"\n2. fleet update: {f['devices']} devices, {f['image_bytes'] // KIB} KiB at mtu"
        f" {f['mtu']}, QoS {f['qos']} (simulate_mqtt)"
    )
    print(
        f"   wall {f['wall_s']:.1f} s, {f['round_trips']} round trips"
        f" ({f['steps_per_device']} per device), {f['round_trips_per_s']:.0f} rt/s"
    )
    print(
        f"   payload bytes: statuses {b['statuses']:,} + commands {b['commands']:,}"
        f" = {b['actual']:,}; ideal {b['ideal']:,} (image {b['image_total']:,}"
        f" + Write framing {b['write_framing_per_device']} + Swap {b['swap']}"
        f" + Sync {b['sync']} per device)"
    )
    print(
        f"   efficiency ideal/actual {f['efficiency']:.3f}; image/actual"
        f" {f['image_over_actual']:.3f}; image/MQTT bytes per hop (computed)"
        f" {f['image_over_mqtt']:.3f}"
    )
    c = f["cpu_us_per_trip"]
    print(
        f"   CPU µs per round trip: worker {c['worker']:.0f} (handle {c['handle']:.0f}),"
        f" broker {c['broker']:.0f}, devices {c['driver']:.0f}"
    )


def print_codec(report: dict[str, Any]) -> None:
    c = report["codec"]
    print(f"\n3. codec (ns/op, call overhead {c['call_overhead_ns']:.0f} ns subtracted)")
    for name, ns in c["ns_per_op"].items():
        print(f"   {name:<34}{ns:>8.0f}")
    framing = ", ".join(f"{k}: {v} B" for k, v in c["write_framing_bytes"].items())
    print(
        f"   Write framing (packed): {framing}; mean over the image"
        f" {c['write_framing_mean']:.2f} B; status with update {c['status_bytes']} B"
    )
    h = report["worker_handle"]
    print(f"\n   Worker.handle, its steps timed in place (median µs, {h['iterations']} iterations)")
    for name, us in h["us_median"].items():
        print(f"   {name:<64}{us:>8.1f}")
    print(f"   {'sum of the steps (hit and miss path)':<64}{h['steps_sum_us']:>8.1f}")
    print(f"   {'Worker.handle itself, reply memo hit':<64}{h['handle_hit_us']:>8.1f}")
    print(f"   {'Worker.handle itself, reply memo miss':<64}{h['handle_miss_us']:>8.1f}")
    print(
        f"   {'store.record + flush, SQLite file in WAL mode (serve --store)':<64}"
        f"{h['file_store_record_flush_us']:>8.1f}"
    )


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"machine: {m['nproc']} CPUs, {m['implementation']} {m['python']},"
        f" paho-mqtt {m['paho_mqtt']}, {m['mosquitto']}; load average"
        f" {m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end"
    )
    print_round_trips(report)
    print_fleet(report["fleet_update"])
    print_codec(report)
    print(f"\nwhole run {report['wall_seconds']:.0f} s")


def print_parts(report: dict[str, Any]) -> None:
    fleet = report.get("fleet_scale")
    if fleet is not None and "error" not in fleet:
        print("\n4. fleet scale: one worker ready (s, peak RSS MB), libyaml alone for comparison")
        for row in fleet["rows"]:
            w, f = row["worker"], row["floor"]
            print(
                f"   {row['devices']:>9,} devices: worker {w['seconds'] or 0:6.2f} s"
                f" {w['rss_mb'] or 0:6.0f} MB; libyaml {f['seconds'] or 0:6.2f} s"
                f" {f['rss_mb'] or 0:6.0f} MB"
            )
        if "linearity" in fleet:
            lin = fleet["linearity"]
            print(
                f"   1M against 100k, per device: time {lin['time']:.2f}{TIMES},"
                f" memory {lin['memory']:.2f}{TIMES}"
            )
    http = report.get("http")
    if http is not None and "error" not in http:
        print("\n5. HTTP: round trips/s of the transport and of a bare endpoint of its server")
        for row in http["round_trips"]:
            t, b = row["transport"], row["bare"]
            print(
                f"   {row['devices']:>3} devices: transport {t['round_trips_per_s']:7.0f}, bare"
                f" {b['round_trips_per_s']:7.0f}, ratio {t['ratio_to_bare']:.2f}{TIMES}"
            )


def print_verdict(missed: list[str]) -> None:
    if not missed:
        print("\nall goals met")
        return
    print(f"\n{len(missed)} goal(s) missed:")
    for line in missed:
        print(f"   {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per window")
    parser.add_argument("--repeats", type=int, default=3, help="windows per cell (best kept)")
    parser.add_argument(
        "--broker-nagle",
        action="store_true",
        help="run mosquitto as tests/broker.py does, without set_tcp_nodelay",
    )
    parser.add_argument(
        "--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}"
    )
    parser.add_argument("--no-million", action="store_true", help="fleet scale without 1M")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    if args.repeats < 1 or not 0.2 <= args.seconds <= 30:
        parser.error("--repeats must be at least 1 and --seconds between 0.2 and 30")
    skip = {part for part in args.skip.split(",") if part}
    if skip - set(PARTS):
        parser.error(f"--skip takes {', '.join(PARTS)}; got {', '.join(sorted(skip - set(PARTS)))}")
    report = run(args.seconds, args.repeats, not args.broker_nagle)
    if "fleet" not in skip:
        extra = ["--no-million"] if args.no_million else []
        report["fleet_scale"] = subprocess_report("fleet_scale.py", extra, timeout=1800)
    if "http" not in skip:
        knobs = ["--seconds", str(args.seconds), "--repeats", str(args.repeats)]
        report["http"] = subprocess_report("delivery_http.py", knobs, timeout=900)
    report["missed"] = goals(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
        print_parts(report)
        print_verdict(report["missed"])
    return 1 if report["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
