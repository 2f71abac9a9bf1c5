"""The trigger benchmark's HTTP clients: signed pushes, latency one push after another,
throughput from concurrent senders, and the check of the records afterwards."""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import secrets
import sqlite3
import statistics
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.context import ForkContext
from pathlib import Path
from typing import Any

import httpx

from benchmarks.trigger_servers import (
    SECRET,
    Target,
    app_name,
    app_uri,
    cpu_seconds,
    database,
    processes,
)
from tests.service import github_push

BEFORE = "1" * 40
WARMUP_REQUESTS = 50


@dataclass(frozen=True)
class Mode:
    """How much each part measures (``DEFAULT`` and ``QUICK`` in trigger.py)."""

    latency_requests: int  # per target and round
    seconds: float  # per throughput window
    rounds: int
    path_iterations: int
    depth_iterations: int
    large_fleet_iterations: int  # 0: skip the 10k-device fleet


@dataclass(frozen=True)
class Pushes:
    """Signed GitHub push deliveries: push ``i`` is a new commit of application ``i % apps``."""

    apps: int
    salt: str = field(default_factory=lambda: secrets.token_hex(14))  # 28 hex digits

    def commit(self, i: int) -> str:
        return f"{i + 1:012x}{self.salt}"  # the first 12 digits go into the build's reason

    def request(self, i: int) -> tuple[bytes, dict[str, str]]:
        payload = github_push(app_uri(i % self.apps), "refs/heads/main", BEFORE, self.commit(i))
        body = json.dumps(payload).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": f"{self.salt[:8]}-{i}",
            "X-Hub-Signature-256": f"sha256={signature}",
            "User-Agent": "GitHub-Hookshot/bench",
        }
        return body, headers

    def index(self, reason: str) -> int | None:
        """The push index from a build's reason (``push github <ref> <12 digits>``)."""
        short = reason.rsplit(" ", 1)[-1]
        return int(short, 16) - 1 if len(short) == 12 else None


def check_answer(target: Target, reply: httpx.Response, i: int, deep: bool) -> None:
    if reply.status_code != 202:
        raise SystemExit(f"{target.kind}: push {i} answered {reply.status_code}: {reply.text}")
    if deep and target.kind == "service":
        body = reply.json()
        if len(body["triggered"]) != 1 or body["alreadyQueued"]:
            raise SystemExit(f"push {i} did not queue exactly one new build: {body}")


def sequential(target: Target, pushes: Pushes, n: int) -> list[float]:
    """Seconds per request, one keep-alive client, each push after the previous answer."""
    out: list[float] = []
    with httpx.Client(base_url=target.url, timeout=30) as client:
        client.get("/healthz")
        for _ in range(n):
            i = next(target.counter)
            body, headers = pushes.request(i)
            start = time.perf_counter()
            reply = client.post(target.path, content=body, headers=headers)
            out.append(time.perf_counter() - start)
            check_answer(target, reply, i, deep=True)
            target.answered.append(i)
    return out


def concurrent(target: Target, pushes: Pushes, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` closed-loop senders for ``seconds``: webhooks/s, latency, CPU per request."""
    barrier = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    deadline = [0.0]

    def send(k: int) -> None:
        with httpx.Client(base_url=target.url, timeout=30) as client:
            client.get("/healthz")  # connected before the window opens
            barrier.wait()
            while time.perf_counter() < deadline[0] and not failures:
                i = next(target.counter)
                body, headers = pushes.request(i)
                start = time.perf_counter()
                reply = client.post(target.path, content=body, headers=headers)
                latencies[k].append(time.perf_counter() - start)
                try:
                    check_answer(target, reply, i, deep=False)
                except SystemExit as exc:
                    failures.append(str(exc))
                    return
                target.answered.append(i)

    threads = [threading.Thread(target=send, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    gc.collect()
    server0, client0 = cpu_seconds(target.pid), time.process_time()
    deadline[0] = time.perf_counter() + seconds
    start = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    server1, client1 = cpu_seconds(target.pid), time.process_time()
    if failures:
        raise SystemExit(failures[0])
    merged = [x for series in latencies for x in series]
    n = len(merged)
    return {
        "requests": n,
        "wall_s": wall,
        "webhooks_per_s": n / wall,
        "latency_ms": percentiles(merged),
        "server_cpu_us_per_request": (server1 - server0) / n * 1e6,
        "server_busy": (server1 - server0) / wall,
        "client_cpu_us_per_request": (client1 - client0) / n * 1e6,
        "client_busy": (client1 - client0) / wall,
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return {
        "n": len(seconds),
        "p50": q[49] * 1e3,
        "p90": q[89] * 1e3,
        "p99": q[98] * 1e3,
        "mean": statistics.fmean(seconds) * 1e3,
        "max": max(seconds) * 1e3,
    }


def measure_http(
    ctx: ForkContext, root: Path, pushes: Pushes, mode: Mode, clients: int
) -> dict[str, Any]:
    """Both servers up; rounds of (latency, throughput), service and baseline alternating."""
    seq: dict[str, list[float]] = {"service": [], "baseline": []}
    windows: dict[str, list[dict[str, Any]]] = {"service": [], "baseline": []}
    with processes(ctx, root) as (service, baseline, drain):
        for target in (service, baseline):
            sequential(target, pushes, WARMUP_REQUESTS)
        for r in range(mode.rounds):
            order = (service, baseline) if r % 2 == 0 else (baseline, service)
            for target in order:
                seq[target.kind] += sequential(target, pushes, mode.latency_requests)
            for target in order:
                windows[target.kind].append(concurrent(target, pushes, clients, mode.seconds))
        answered = list(service.answered)
    checks = check_records(root, pushes, answered)
    latency = {kind: percentiles(samples) for kind, samples in seq.items()}
    best = {kind: max(w, key=lambda x: x["webhooks_per_s"]) for kind, w in windows.items()}
    return {
        "latency": {
            **latency,
            "ratio": {p: latency["service"][p] / latency["baseline"][p] for p in ("p50", "p99")},
        },
        "throughput": {
            **best,
            "windows": {k: [w["webhooks_per_s"] for w in v] for k, v in windows.items()},
            "ratio": best["service"]["webhooks_per_s"] / best["baseline"]["webhooks_per_s"],
            # server CPU per request, baseline / service: the capacity ratio on a server with
            # a core of its own, whatever limits the client
            "cpu_ratio": best["baseline"]["server_cpu_us_per_request"]
            / best["service"]["server_cpu_us_per_request"],
        },
        "drainer": drain,
        "checks": checks,
    }


def check_records(root: Path, pushes: Pushes, answered: list[int]) -> dict[str, int]:
    """Exactly one build per push answered 202, for its application and commit."""
    with sqlite3.connect(database(root)) as link:
        rows = link.execute("SELECT application, reason, state FROM builds").fetchall()
        (delivered,) = link.execute("SELECT count(*) FROM webhook_deliveries").fetchone()
    link.close()
    found: dict[int, str] = {}
    for application, reason, state in rows:
        i = pushes.index(reason)
        if i is None or i in found or state not in ("queued", "running"):
            raise SystemExit(f"unexpected build record: {application} {reason!r} {state}")
        found[i] = application
    if sorted(found) != sorted(answered):
        raise SystemExit(
            f"{len(answered)} pushes were answered 202 but the records hold {len(rows)}"
            f" builds ({len(set(answered) - set(found))} pushes without a build)"
        )
    wrong = [i for i, app in found.items() if app != app_name(i % pushes.apps)]
    if wrong:
        raise SystemExit(f"{len(wrong)} builds are for the wrong application, e.g. push {wrong[0]}")
    if delivered != 2 * len(answered):
        raise SystemExit(
            f"{delivered} deliveries remembered for {len(answered)} pushes, not 2 each"
        )
    return {"pushes": len(answered), "builds": len(rows), "deliveries": int(delivered)}
