"""Trigger benchmark: a signed push webhook to a queued build, against a bare FastAPI endpoint.

Runs the real build service app (``create_app`` on a ``Service`` wired as ``assemble``
wires it: SQLite records in a temporary directory, the real ``Scheduler`` and
``FleetSource``) over a fleet of ``--apps`` applications (default 50, with ``--devices`` 4
each on the application's spec, one spec file per application). Each application builds
from a repository of its own: distinct ``file://`` URIs that do not exist, since nothing on
the webhook path touches git. The backend is ``QueueOnlyBackend``: ``submit`` accepts a
build and does nothing else, so the benchmark measures the service's front half only:
signature, parse, duplicate check, match against the fleet, allowlist, build record,
enqueue.

A drainer process stands in for the workers that take builds off the queue. Every 10 ms it
moves queued builds to ``running`` in the records database, as ``LocalBackend``'s worker
does when it picks a build up. The queue therefore stays near empty, and every push queues
a new build instead of joining an identical build that is still waiting (the scheduler
collapses those into one).

The baseline, measured in the same run, is a bare FastAPI app with one ``POST /noop`` that
reads the body and answers 202 ``{}``. It runs under the same uvicorn configuration (that
of ``ajour-build serve``) and gets the same payloads, headers and client.

Each app runs under uvicorn in a process of its own, so the load generator does not share a
GIL with the server. The processes are forked before the client starts any thread: a spawn
would re-import this script and the service in each of them, seconds on a busy 2-core
machine. Service and baseline alternate within each round:

1. **Latency**: one keep-alive ``httpx.Client`` sends pushes one after another; p50 and p99
   of the request time. The route creates the build record (state ``queued``) before it
   answers 202, so the answer marks the moment the build is queued.
2. **Throughput**: ``--clients`` threads (default 8), each with its own keep-alive client,
   send pushes for 5 s per window (1.5 s with ``--quick``); webhooks/s, best window kept.
3. **Where the time goes**, in process: the route's steps timed one by one on the same
   objects; ``Scheduler.push`` against the depth of the queue (0, 16 and 100 other builds
   waiting) and over a fleet of 10,000 devices (not with ``--quick``); a thread-pool hop;
   and the signature check alone.

At the end the records database must hold exactly one build per push, for the pushed
application and commit, and two remembered deliveries per push; otherwise the script stops
with an error. The exit status is 1 when the goal is missed: at least 25 webhooks/s sustained
with ``--clients`` senders, with a p99 latency of at most 1 s under that load
(docs/performance.md explains the choice).

About 50 s on a 2-core machine (``--quick``: about 11 s; both longer on a busy machine).

    python benchmarks/trigger.py [--quick] [--apps 50] [--devices 4] [--clients 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import fastapi  # noqa: E402
import httpx  # noqa: E402
import uvicorn  # noqa: E402

from benchmarks.trigger_load import WARMUP_REQUESTS, Mode, Pushes, measure_http  # noqa: E402
from benchmarks.trigger_servers import (  # noqa: E402
    DEVICES_PER_APP,
    DRAIN_INTERVAL_S,
    UVICORN,
    write_fleet,
)
from benchmarks.trigger_steps import (  # noqa: E402
    large_fleet,
    path_parts,
    queue_depths,
    signature_cost,
    threadpool_hop_us,
)

GOAL_RATE = 25.0  # webhooks/s sustained with --clients senders: 50 repositories in 2 s
GOAL_P99_MS = 1000.0  # service p99 under that load: 5x inside Gitea's 5 s delivery timeout
TIMES = "\N{MULTIPLICATION SIGN}"

DEFAULT = Mode(
    latency_requests=400,
    seconds=5.0,
    rounds=2,
    path_iterations=200,
    depth_iterations=40,
    large_fleet_iterations=10,
)
QUICK = Mode(
    latency_requests=100,
    seconds=1.5,
    rounds=1,
    path_iterations=40,
    depth_iterations=10,
    large_fleet_iterations=0,
)


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "httpx": httpx.__version__,
        "sqlite": sqlite3.sqlite_version,
        "loadavg_start": os.getloadavg(),
    }


def run(mode: Mode, apps: int, devices: int, clients: int) -> dict[str, Any]:
    started = time.perf_counter()
    info = machine()
    ctx = multiprocessing.get_context("fork")
    pushes = Pushes(apps)
    with tempfile.TemporaryDirectory(prefix="ajour-bench-trigger-") as tmp_name:
        tmp = Path(tmp_name)
        for name in ("http", "path", "depth"):
            write_fleet(tmp / name, apps, devices)
        http = measure_http(ctx, tmp / "http", pushes, mode, clients)
        path = path_parts(tmp / "path", apps, mode.path_iterations)
        path["scheduler_push_us_by_queue_depth"] = queue_depths(
            tmp / "depth", apps, mode.depth_iterations
        )
        path["large_fleet"] = large_fleet(tmp / "large", mode.large_fleet_iterations)
    path["threadpool_hop_us"] = threadpool_hop_us()
    info["loadavg_end"] = os.getloadavg()
    loaded = http["throughput"]["service"]
    rate, p99 = loaded["webhooks_per_s"], loaded["latency_ms"]["p99"]
    return {
        "benchmark": "trigger",
        "machine": info,
        "settings": {
            "applications": apps,
            "devices_per_application": devices,
            "clients": clients,
            "latency_requests_per_round": mode.latency_requests,
            "seconds_per_window": mode.seconds,
            "rounds": mode.rounds,
            "warmup_requests": WARMUP_REQUESTS,
            "uvicorn": UVICORN,
            "backend": "QueueOnlyBackend (submit does nothing)",
            "drain_interval_ms": DRAIN_INTERVAL_S * 1e3,
            "server_processes": "service, baseline and drainer: one forked process each",
        },
        **http,
        "path": path,
        "signature": signature_cost(pushes),
        "goal": {
            "webhooks_per_s_min": GOAL_RATE,
            "p99_ms_under_load_max": GOAL_P99_MS,
            "met": rate >= GOAL_RATE and p99 <= GOAL_P99_MS,
        },
        "wall_seconds": time.perf_counter() - started,
    }


def print_http(report: dict[str, Any]) -> None:
    s, lat, thr = report["settings"], report["latency"], report["throughput"]
    print(
        f"\n1. latency, pushes one after another on one keep-alive client"
        f" ({lat['service']['n']} per server)"
    )
    print(f"{'':<10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'max ms':>9}")
    for kind in ("service", "baseline"):
        x = lat[kind]
        print(
            f"{kind:<10}{x['p50']:>9.2f}{x['p90']:>9.2f}{x['p99']:>9.2f}"
            f"{x['mean']:>9.2f}{x['max']:>9.2f}"
        )
    r = lat["ratio"]
    print(f"{'ratio':<10}{r['p50']:>8.1f}{TIMES}{'':>9}{r['p99']:>8.1f}{TIMES}")
    print(
        f"\n2. throughput, {s['clients']} clients, best of {s['rounds']} x"
        f" {s['seconds_per_window']} s (all windows: service"
        f" {', '.join(f'{w:.0f}' for w in thr['windows']['service'])};"
        f" baseline {', '.join(f'{w:.0f}' for w in thr['windows']['baseline'])})"
    )
    print(
        f"{'':<10}{'hooks/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv µs/req':>12}{'srv busy':>10}"
        f"{'cli µs/req':>12}{'cli busy':>10}"
    )
    for kind in ("service", "baseline"):
        x = thr[kind]
        print(
            f"{kind:<10}{x['webhooks_per_s']:>9.0f}{x['latency_ms']['p50']:>9.2f}"
            f"{x['latency_ms']['p99']:>9.2f}{x['server_cpu_us_per_request']:>12.0f}"
            f"{x['server_busy']:>10.2f}{x['client_cpu_us_per_request']:>12.0f}"
            f"{x['client_busy']:>10.2f}"
        )
    print(
        f"{'ratio':<10}{thr['ratio']:>8.3f}{TIMES}{'':>18}{thr['cpu_ratio']:>11.3f}{TIMES}"
        "  (server CPU: baseline / service)"
    )
    d = report["drainer"]
    print(
        f"   drainer: {d.get('moved', '?')} builds moved to running, deepest queue seen"
        f" {d.get('max_queue_depth', '?')}, {d.get('cpu_s', 0):.1f} s CPU"
    )


def print_path(report: dict[str, Any]) -> None:
    p, sig = report["path"], report["signature"]
    print(f"\n3. the webhook route's steps in process (median µs, {p['iterations']} pushes)")
    for name, us in p["us_median"].items():
        print(f"   {name:<64}{us:>9.1f}")
    print(f"   {'sum of the steps':<64}{p['steps_sum_us']:>9.1f}")
    print(
        f"   {'Scheduler.push whole (fleet.current, match, enqueue)':<64}"
        f"{p['scheduler_push_us']:>9.1f}"
    )
    print(
        f"   {'run_in_threadpool hop, idle loop (the route makes 3)':<64}"
        f"{p['threadpool_hop_us']:>9.1f}"
    )
    depths = ", ".join(
        f"{d} waiting: {us / 1e3:.1f} ms" for d, us in p["scheduler_push_us_by_queue_depth"].items()
    )
    print(f"   Scheduler.push by queue depth: {depths}")
    big = p["large_fleet"]
    if big is not None:
        print(
            f"   Scheduler.push over {big['applications']} applications x"
            f" {big['devices'] // big['applications']} devices:"
            f" {big['scheduler_push_us'] / 1e3:.1f} ms"
            f" (fleet loaded in {big['load_fleet_s']:.1f} s)"
        )
    print(
        f"   signature: verify() {sig['verify_us']:.1f} µs, HMAC-SHA256 alone"
        f" {sig['hmac_sha256_us']:.1f} µs over the {sig['payload_bytes']} B payload;"
        f" {sig['hmac_sha256_us_per_mib']:.0f} µs per MiB"
    )


def print_table(report: dict[str, Any]) -> None:
    m, s, c, g = report["machine"], report["settings"], report["checks"], report["goal"]
    print(
        f"machine: {m['nproc']} CPUs, {m['implementation']} {m['python']}, FastAPI"
        f" {m['fastapi']}, uvicorn {m['uvicorn']}, httpx {m['httpx']}, SQLite {m['sqlite']};"
        f" load average {m['loadavg_start'][0]:.2f} at the start,"
        f" {m['loadavg_end'][0]:.2f} at the end"
    )
    print(
        f"fleet: {s['applications']} applications x {s['devices_per_application']} devices;"
        f" backend {s['backend']}; drainer every {s['drain_interval_ms']:.0f} ms"
    )
    print_http(report)
    print_path(report)
    print(
        f"\nchecks: {c['pushes']} pushes answered 202, {c['builds']} builds in the records"
        f" (one per push, application and commit match), {c['deliveries']} deliveries"
    )
    verdict = "met" if g["met"] else "MISSED"
    print(
        f"goal: >= {g['webhooks_per_s_min']:.0f} webhooks/s with {s['clients']} clients,"
        f" p99 <= {g['p99_ms_under_load_max']:.0f} ms under that load: {verdict}"
    )
    print(f"whole run {report['wall_seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run (about 15 s)")
    parser.add_argument("--apps", type=int, default=50, help="applications in the fleet")
    parser.add_argument("--devices", type=int, default=DEVICES_PER_APP, help="per application")
    parser.add_argument("--clients", type=int, default=8, help="concurrent senders")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    if not 1 <= args.apps <= 2000 or not 0 <= args.devices <= 1000 or not 1 <= args.clients <= 256:
        parser.error("--apps must be 1-2000, --devices 0-1000 and --clients 1-256")
    report = run(QUICK if args.quick else DEFAULT, args.apps, args.devices, args.clients)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0 if report["goal"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
