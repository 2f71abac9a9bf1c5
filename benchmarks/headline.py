"""Headline benchmark: git push → every device running the new firmware, against the floor.

One run, all real parts on loopback: a git push to a bare repository (gitpython) and the
signed GitHub push webhook to ``ajour-build serve`` (LocalBackend, host runner) → the build
of a 256 KiB firmware (c-blinky with 248 KiB of read-only assets, ``make`` in the arm-gcc
builder's entrypoint) → publish to Debian's ``docker-registry`` (with patch layers) → the
registry's notification to ``ajour-delivery serve`` (MQTT, QoS 1) → N simulated devices
(mtu 512, one gateway connection, ``simulate_mqtt``) that poll every ``poll`` seconds and
update. Wall time from the push to the last device running the new version.

**The floor**, measured in the same run: the same build run directly (a fresh clone and the
builder's entrypoint, no trigger, median of 3) plus the round trips the update needs by the
protocol (N x (image/mtu ``Write``s + ``Swap`` + the status after the reboot, answered
``Sync``)) at the rate of the raw broker echo (``benchmarks/delivery_responders.py``) with
the same N devices at QoS 1, best of the windows before and after the runs.

**Delta**: the same push, with devices that apply patches (they advertise ``patch``; the
publish made a patch from their version). Reported end to end and delivery only (from the
build's publish to the last device).

Goals, at N = 1,000: total <= 1.25 x the floor; delta delivery >= 20 x faster than the full
image. The exit status is 1 when one is missed. ``--quick`` runs N = 100 only (a smoke
test: no goal is judged). N = 10,000 runs only when ``--budget`` seconds allow it.

    python benchmarks/headline.py [--quick] [--budget 900] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.delivery_fixtures import broker, find_pid, process_cpu  # noqa: E402
from benchmarks.headline_parts import (  # noqa: E402
    EVENTS,
    IMAGE_SIZE,
    MTU,
    FirmwareRepo,
    Proc,
    build_service,
    delivery_worker,
    listen_port,
    write_fleet,
)
from benchmarks.headline_run import echo_rate, first_version, floor, timed_run  # noqa: E402
from delivery.broker_conf import queued_messages  # noqa: E402
from tests.registry import run_registry  # noqa: E402

GOAL_N = 1000
GOAL_RATIO = 1.25
GOAL_DELTA = 20.0
TIMES = "\N{MULTIPLICATION SIGN}"


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def poll_for(devices: int) -> int:
    """Seconds between a synced device's polls: 1 s per 1,000 devices (at least 1 s), so
    the idle fleet's polls stay under a tenth of the broker's echo rate."""
    return max(1, math.ceil(devices / 1000))


def run(sizes: list[int], budget: float, quick: bool) -> dict[str, Any]:
    began = time.perf_counter()
    info = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }
    seconds, repeats = (1.5, 1) if quick else (3.0, 2)
    ctx = multiprocessing.get_context("spawn")
    runs: list[dict[str, Any]] = []
    skipped: list[str] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ajour-bench-headline-") as tmp_name:
        tmp = Path(tmp_name)
        echo_root = tmp / "echo"
        echo_root.mkdir()
        (echo_root / "fw.bin").write_bytes(os.urandom(IMAGE_SIZE))
        repo = FirmwareRepo(tmp / "git")
        # mosquitto keeps at most 1000 QoS 1 messages queued per client (max_queued_messages)
        # and drops the rest: the worker's one connection has a status of every device
        # queued. The broker is anonymous, so not broker-config's conf, but its sizing
        queue = f"max_queued_messages {queued_messages(max(sizes))}\n"
        with broker(tmp / "mqtt", tcp_nodelay=True, extra=queue) as mqtt_port:
            mosquitto = find_pid(str(tmp / "mqtt" / "mosquitto.conf"))
            echo: dict[int, list[dict[str, Any]]] = {}

            def measure_echo(devices: int) -> None:
                progress(f"echo baseline, {devices} devices, QoS 1")
                echo.setdefault(devices, []).append(
                    echo_rate(ctx, mqtt_port, echo_root, devices, seconds, repeats, mosquitto)
                )

            http_port = listen_port()
            notify = f"http://127.0.0.1:{http_port}/v1/events"
            headers = {"Authorization": f"Bearer {EVENTS}"}
            with run_registry(
                tmp / "registry", also_notify=notify, notify_headers=headers
            ) as registry:
                fleet = write_fleet(tmp, max(sizes), registry.host, repo)
                mqtt = f"mqtt://127.0.0.1:{mqtt_port}"
                version = 0
                running = b""
                for devices in sizes:
                    elapsed = time.perf_counter() - began
                    if runs and elapsed + estimate(runs, devices) > budget:
                        skipped.append(f"N={devices}: about {estimate(runs, devices):.0f} s,"
                                       f" {budget - elapsed:.0f} s of --budget left")  # fmt: skip
                        continue
                    measure_echo(devices)
                    poll = poll_for(devices)
                    with (
                        build_service(tmp, fleet) as service,
                        delivery_worker(
                            tmp, fleet, mqtt_port, http_port, registry.host, poll
                        ) as worker,
                    ):
                        procs = {"service": service, "worker": worker}
                        procs["registry"] = Proc("registry", registry.process, "", Path())
                        if not running:
                            progress("first version 1.0.0 (untimed)")
                            running = first_version(repo, service, tmp / "state", "1.0.0")
                        for delta in (False, True):
                            versions = (f"1.0.{version}", f"1.0.{version + 1}")
                            version += 1
                            kind = "delta" if delta else "full image"
                            progress(f"N={devices}, {kind}: push {versions[1]}")
                            broker0 = process_cpu(mosquitto)
                            try:
                                got = timed_run(repo, procs, tmp / "state", mqtt, devices,
                                                versions, running, delta, poll)  # fmt: skip
                            except SystemExit as exc:
                                failed.append(f"N={devices}, {kind}: {str(exc)[:2000]}")
                                progress(failed[-1][:300])
                                break
                            c = got["cpu_s"]
                            c["broker"] = process_cpu(mosquitto) - broker0
                            c["others"] = c["machine"] - sum(
                                v for k, v in c.items() if k != "machine"
                            )  # other engineers' processes, and the build's compiler
                            got["poll_s"] = poll
                            running = got["image"]
                            runs.append(got)
                            progress(f"  {got['total_s']:.2f} s")
                    if not quick:
                        measure_echo(devices)
                    fastest = max(echo[devices], key=lambda e: e["round_trips_per_s"])
                    best = fastest["round_trips_per_s"]
                    for got in runs[len(runs) - len(runs_of(runs, devices)) :]:
                        progress(f"N={devices}: the build run directly (the floor)")
                        got["floor"] = floor(repo, got, tmp, 1 if quick else 3, best)
                        got["ratio"] = got["total_s"] / got["floor"]["total_s"]
                        got["cpu_per_trip"] = cpu_per_trip(got, fastest)
                        del got["image"]
    info["loadavg_end"] = os.getloadavg()
    return {"machine": info, "runs": runs, "echo": echo, "skipped": skipped, "failed": failed,
            "wall_seconds": time.perf_counter() - began}  # fmt: skip


def cpu_per_trip(run: dict[str, Any], echo: dict[str, Any]) -> dict[str, float]:
    """CPU µs per round trip of the update (worker, simulator and broker) against the
    echo's (responder, device driver and broker), and the share of the machine's 2 cores
    that other processes took during the run."""
    c, e = run["cpu_s"], echo["cpu_us_per_trip"]
    trips = run["floor"]["round_trips"]
    ours = (c["worker"] + c["simulator"] + c["broker"]) / trips * 1e6
    base = e["responder"] + e["driver"] + e["broker"]
    return {
        "run_us": ours,
        "echo_us": base,
        "ratio": ours / base,
        "others_cores": c["others"] / run["total_s"],
    }


def runs_of(runs: list[dict[str, Any]], devices: int) -> list[dict[str, Any]]:
    return [r for r in runs if r["devices"] == devices]


def estimate(runs: list[dict[str, Any]], devices: int) -> float:
    """Seconds a size will take, from the largest size run so far (linear in devices)."""
    last = max(runs, key=lambda r: r["devices"])
    seconds: float = sum(r["total_s"] for r in runs if r["devices"] == last["devices"])
    return seconds / int(last["devices"]) * devices * 1.3 + 30


def judge(report: dict[str, Any]) -> dict[str, Any]:
    """The goals at N = 1,000 (not judged when that size did not run)."""
    full = [r for r in report["runs"] if r["devices"] == GOAL_N and not r["delta"]]
    delta = [r for r in report["runs"] if r["devices"] == GOAL_N and r["delta"]]
    if not full or not delta:
        return {"judged": False, "met": True}
    f, d = full[0], delta[0]
    speedup = f["delivery_s"] / d["delivery_s"]
    return {
        "judged": True,
        "ratio": f["ratio"],
        "ratio_max": GOAL_RATIO,
        "delta_delivery_speedup": speedup,
        "delta_end_to_end_speedup": f["total_s"] / d["total_s"],
        "delta_speedup_min": GOAL_DELTA,
        "met": f["ratio"] <= GOAL_RATIO and speedup >= GOAL_DELTA,
    }


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"machine: {m['nproc']} CPUs, Python {m['python']}; load average"
        f" {m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end"
    )
    print(f"firmware {IMAGE_SIZE // 1024} KiB, mtu {MTU}, MQTT QoS 1; times in seconds\n")
    print(
        f"{'N':>6} {'kind':<6} {'total':>7} {'floor':>7} {'ratio':>6} {'build':>6}"
        f" {'publish':>7} {'1st cmd':>7} {'deliver':>7} {'floor b':>7} {'floor d':>7} {'rt/dev':>6}"
        f" {'echo rt/s':>9} {'poll':>4}"
    )
    for r in report["runs"]:
        fl = r["floor"]
        print(
            f"{r['devices']:>6} {'delta' if r['delta'] else 'full':<6} {r['total_s']:>7.2f}"
            f" {fl['total_s']:>7.2f} {r['ratio']:>5.2f}{TIMES} {r['build_started_s']:>6.2f}"
            f" {r['published_s']:>7.2f} {r['first_update_command_s'] or 0:>7.2f}"
            f" {r['delivery_s']:>7.2f} {fl['build_s']:>7.2f}"
            f" {fl['delivery_s']:>7.2f} {fl['round_trips_per_device']:>6}"
            f" {fl['echo_round_trips_per_s']:>9.0f} {r['poll_s']:>4}"
        )
    print(
        "\nbuild: the build started; publish: build and publish done (the build's record);"
        " 1st cmd: the worker's first update command (its /metrics, every 0.1 s); deliver:"
        " publish to the last device; floor b / floor d: the direct build / the round trips"
        " at the echo's rate"
    )
    print("\nCPU seconds during each run (machine: every process; others: not ours)")
    for r in report["runs"]:
        c = r["cpu_s"]
        print(
            f"{r['devices']:>6} {'delta' if r['delta'] else 'full':<6} "
            + ", ".join(f"{k} {v:.2f}" for k, v in c.items())
            + f"; data/device {r['data_bytes_per_device']} B"
        )
    print(
        "\nCPU µs per round trip: the run (worker + simulator + broker) / the echo"
        " (responder + driver + broker); cores other processes took during the run"
    )
    for r in report["runs"]:
        u = r["cpu_per_trip"]
        print(
            f"{r['devices']:>6} {'delta' if r['delta'] else 'full':<6} {u['run_us']:>7.1f} /"
            f" {u['echo_us']:>6.1f} = {u['ratio']:.2f}{TIMES}; others {u['others_cores']:.2f}"
        )  # fmt: skip
    for note in report["skipped"]:
        print(f"skipped: {note}")
    for note in report["failed"]:
        print(f"FAILED: {note}")
    g = report["goal"]
    if g["judged"]:
        print(
            f"\ngoal at N={GOAL_N}: total/floor {g['ratio']:.2f}{TIMES} (<= {GOAL_RATIO}):"
            f" {'met' if g['ratio'] <= GOAL_RATIO else 'MISSED'}; delta delivery"
            f" {g['delta_delivery_speedup']:.1f}{TIMES} faster (>= {GOAL_DELTA:g}):"
            f" {'met' if g['delta_delivery_speedup'] >= GOAL_DELTA else 'MISSED'};"
            f" delta end to end {g['delta_end_to_end_speedup']:.1f}{TIMES} faster"
        )
    print(f"whole run {report['wall_seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="N = 100 only (a smoke test)")
    parser.add_argument(
        "--budget", type=float, default=900.0, help="seconds; a size that would not fit is skipped"
    )
    parser.add_argument("--sizes", default="100,1000,10000", help="device counts, comma-separated")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    try:
        sizes = [100] if args.quick else sorted({int(n) for n in args.sizes.split(",")})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not all(1 <= n <= 100_000 for n in sizes):
        parser.error(f"--sizes must be 1 to 100000 devices each, got {args.sizes!r}")
    report = run(sizes, args.budget, args.quick)
    report["goal"] = judge(report)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0 if report["goal"]["met"] and not report["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
