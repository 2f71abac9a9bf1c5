"""The trigger benchmark's in-process timings: the webhook route's steps one by one,
``Scheduler.push`` by queue depth and over a large fleet, a thread-pool hop, the signature."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ajour_build.lifecycle import Build, BuildState
from ajour_build.push import match
from ajour_build.service.schemas import BuildOut, WebhookOut
from ajour_build.service.state import Service
from ajour_build.service.webhooks import parse, verify
from benchmarks import timing
from benchmarks.trigger_load import Pushes
from benchmarks.trigger_servers import SECRET, make_service, write_fleet

QUEUE_DEPTHS = (0, 16, 100)  # 16: LocalBackend's default queue_size; 100: Query's limit
LARGE_FLEET = (100, 100)  # applications, devices each: the render benchmark's 10k devices


def per_op_ns(fn: Callable[[], object], repeats: int = 5) -> float:
    return timing.per_op_ns(fn, budget_s=0.05, repeats=repeats)


def signature_cost(pushes: Pushes) -> dict[str, Any]:
    body, headers = pushes.request(0)
    lowered = {k.lower(): v for k, v in headers.items()}
    key = SECRET.encode()
    mib = os.urandom(1 << 20)
    return {
        "payload_bytes": len(body),
        "verify_us": per_op_ns(lambda: verify("github", SECRET, body, lowered)) / 1e3,
        "hmac_sha256_us": per_op_ns(lambda: hmac.new(key, body, hashlib.sha256).hexdigest()) / 1e3,
        "hmac_sha256_us_per_mib": per_op_ns(
            lambda: hmac.new(key, mib, hashlib.sha256).hexdigest(), repeats=3
        )
        / 1e3,
    }


STEPS = (
    "verify: HMAC-SHA256 of the body, constant-time compare",
    "parse: json.loads, Push",
    "delivery keys: sha256 of the body",
    "remember_delivery x2: two SQLite transactions",
    "fleet.current(): list and stat every spec file",
    "match: the fleet's plan (cached per fleet), allowlist",
    "records.queued_by_spec(): the collapse check (queue drained)",
    "record + submit: insert build + consumers, submit, read back",
    "answer: BuildOut, model_dump, JSONResponse",
)


def path_parts(root: Path, apps: int, iterations: int) -> dict[str, Any]:
    """The webhook route's steps, timed in place on one Service (no HTTP), then
    ``Scheduler.push`` whole, alternating, each build moved to running afterwards."""
    service = make_service(root)
    service.start()
    records, scheduler, config = service.records, service.scheduler, service.config
    pushes = Pushes(apps)
    secret = config.service.webhooks.secret("github")
    clock = time.perf_counter_ns
    samples: list[list[int]] = [[] for _ in range(len(STEPS) + 1)]
    gc.collect()
    for n in range(iterations):
        body, headers = pushes.request(2 * n)
        lowered = {k.lower(): v for k, v in headers.items()}
        t0 = clock()
        verify("github", secret, body, lowered)
        t1 = clock()
        push = parse("github", "push", body)
        t2 = clock()
        keys = [f"github:body:{hashlib.sha256(body).hexdigest()}", f"github:id:{2 * n}"]
        t3 = clock()
        assert all([records.remember_delivery(k) == "new" for k in keys]) and push is not None
        t4 = clock()
        fleet = scheduler.fleet.current()
        t5 = clock()
        found = match(fleet, config, push, scheduler.plan(fleet))
        t6 = clock()
        records.queued_by_spec()
        t7 = clock()
        reason = f"push {push.provider} {push.ref} {push.after[:12]}"
        planned = found.builds[0]
        build = scheduler._record(planned, reason, None, None)
        service.backend.submit(build, planned)
        build = records.require(build.id)
        t8 = clock()
        out = WebhookOut(event="push", triggered=[BuildOut.of(build)], explanation="queued")
        JSONResponse(out.model_dump(mode="json", by_alias=True), status_code=202)
        t9 = clock()
        records.transition(build.id, BuildState.RUNNING)
        whole = parse("github", "push", pushes.request(2 * n + 1)[0])
        assert whole is not None
        t10 = clock()
        outcome = scheduler.push(whole)
        t11 = clock()
        assert len(outcome.queued) == 1, outcome
        records.transition(outcome.queued[0].id, BuildState.RUNNING)
        marks = (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9)
        for i in range(len(STEPS)):
            samples[i].append(marks[i + 1] - marks[i])
        samples[-1].append(t11 - t10)
    service.stop()
    medians = [statistics.median(s) / 1e3 for s in samples]
    steps = dict(zip(STEPS, medians, strict=False))
    return {
        "iterations": iterations,
        "us_median": steps,
        "steps_sum_us": sum(steps.values()),
        "scheduler_push_us": medians[-1],
    }


def push_median_us(service: Service, pushes: Pushes, first: int, iterations: int) -> float:
    """Median µs of ``Scheduler.push`` (each queued build is then moved to running)."""
    series = []
    gc.collect()
    for i in range(first, first + iterations):
        push = parse("github", "push", pushes.request(i)[0])
        assert push is not None
        start = time.perf_counter_ns()
        outcome = service.scheduler.push(push)
        series.append(time.perf_counter_ns() - start)
        assert len(outcome.queued) == 1, outcome
        service.records.transition(outcome.queued[0].id, BuildState.RUNNING)
    return statistics.median(series) / 1e3


def other_build(k: int) -> Build:
    """A build of a spec nobody pushes: it stays queued."""
    return Build.queued(
        name=f"other-{k}",
        spec_hash=f"other-{k}",
        application="other",
        consumers=("other", "other/dev-0", "other/dev-1"),
        backend="queue-only",
        reason="waiting",
        git_url="file:///srv/git/other.git",
        revision="main",
        image="other:latest",
        publish_to="oci://registry.example.com/ajour/other:latest",
    )


def queue_depths(root: Path, apps: int, iterations: int) -> dict[str, float]:
    """Median µs of ``Scheduler.push`` with ``depth`` other builds waiting in the queue."""
    service = make_service(root)
    service.start()
    pushes = Pushes(apps)
    out: dict[str, float] = {}
    waiting = 0
    for depth in QUEUE_DEPTHS:
        while waiting < depth:
            service.records.create(other_build(waiting))
            waiting += 1
        out[str(depth)] = push_median_us(service, pushes, depth * iterations, iterations)
    service.stop()
    return out


def large_fleet(root: Path, iterations: int) -> dict[str, Any] | None:
    """``Scheduler.push`` over the render benchmark's fleet size (queue drained)."""
    if not iterations:
        return None
    apps, devices = LARGE_FLEET
    write_fleet(root, apps, devices)
    started = time.perf_counter()
    service = make_service(root)
    load_s = time.perf_counter() - started
    service.start()
    us = push_median_us(service, Pushes(apps), 0, iterations)
    service.stop()
    return {
        "applications": apps,
        "devices": apps * devices,
        "load_fleet_s": load_s,
        "scheduler_push_us": us,
    }


def threadpool_hop_us(n: int = 2000) -> float:
    """µs per ``run_in_threadpool`` of a no-op on an idle event loop (the route makes 3)."""

    async def hops() -> float:
        await run_in_threadpool(lambda: None)
        start = time.perf_counter()
        for _ in range(n):
            await run_in_threadpool(lambda: None)
        return (time.perf_counter() - start) / n * 1e6

    return asyncio.run(hops())
