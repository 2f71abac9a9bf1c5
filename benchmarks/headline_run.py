"""One timed run of the headline benchmark: devices polling, a git push, the webhook, the
build, the publish, and every device running the new version; and the echo baseline."""

from __future__ import annotations

import os
import statistics
import threading
import time
from datetime import datetime
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

from benchmarks.delivery_responders import Responder
from benchmarks.delivery_round_trips import window
from benchmarks.headline_parts import (
    APP,
    IMAGE_SIZE,
    MTU,
    TOKEN,
    FirmwareRepo,
    Proc,
    direct_build,
    get_json,
    metrics,
    update_round_trips,
    webhook,
)
from delivery.mqtt_simulator import simulate_mqtt
from delivery.simulator import DeviceResult, Failures

COUNTERS = ("statuses_total{outcome=\"answered\"}", "commands_total{type=\"write\"}",
            "commands_total{type=\"writepatch\"}", "commands_total{type=\"swap\"}",
            "commands_total{type=\"sync\"}")  # fmt: skip
SYNCS = COUNTERS[4]


def echo_rate(
    ctx: SpawnContext, port: int, root: Path, devices: int, seconds: float, repeats: int,
    broker: int | None,
) -> dict[str, Any]:  # fmt: skip
    """The raw broker echo with ``devices`` closed loops at QoS 1: best of ``repeats``."""
    best: dict[str, Any] = {}
    for _ in range(repeats):
        responder = Responder(ctx, "echo", port, 1, root)
        try:
            got = window(port, responder, devices, 1, seconds, broker)
        finally:
            responder.close()
        if not best or got["round_trips_per_s"] > best["round_trips_per_s"]:
            best = got
    return best


def wait_build(service: Proc, build_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        build = get_json(f"{service.url}/api/v1/builds/{build_id}", TOKEN)
        if build["state"] in ("succeeded", "failed", "cancelled"):
            if build["state"] != "succeeded":
                raise SystemExit(f"build {build_id} {build['state']}: {build.get('failure')}")
            return build
        if time.monotonic() > deadline:
            raise SystemExit(f"build {build_id} still {build['state']} after {timeout:g} s")
        time.sleep(0.1)


def artifact(state: Path, build: dict[str, Any]) -> bytes:
    return (state / "builds" / str(build["backendRef"]) / "artifacts" / "blinky.bin").read_bytes()


def first_version(repo: FirmwareRepo, service: Proc, state: Path, version: str) -> bytes:
    """Publish ``version`` through the same path, untimed: what the devices run at first."""
    before, after = repo.commit(version, one_line_change=False)
    repo.push()
    return artifact(state, wait_build(service, webhook(service.url, repo, before, after)))


def machine_busy() -> float:
    """CPU seconds every process on the machine has used (``/proc/stat``: all but idle)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def counters(worker: Proc) -> dict[str, float]:
    return metrics(worker.url, COUNTERS)


def cpu(procs: dict[str, Proc], broker: Proc | None = None) -> dict[str, float]:
    return {name: proc.cpu() for name, proc in procs.items()}


def timed_run(
    repo: FirmwareRepo,
    procs: dict[str, Proc],
    state: Path,
    mqtt_url: str,
    devices: int,
    versions: tuple[str, str],
    running: bytes,
    delta: bool,
    poll: int,
) -> dict[str, Any]:
    """Devices on ``versions[0]`` (image ``running``) poll; at t0 the push of ``versions[1]``
    (a one-line change); the run ends when the last device runs it."""
    service, worker = procs["service"], procs["worker"]
    old, new = versions
    before, after = repo.commit(new, one_line_change=True)
    names = [f"dev{i}" for i in range(devices)]
    results: list[DeviceResult] = []
    estimate = devices * update_round_trips(IMAGE_SIZE) / 5000
    failures = Failures(firmware=running, delta=delta)
    syncs = counters(worker)[SYNCS]

    def simulate() -> None:
        results.extend(
            simulate_mqtt(
                mqtt_url,
                APP,
                names,
                old.encode(),
                MTU,
                qos=1,
                timeout=120 + 3 * estimate,
                wait_cap=float(poll),
                failures=failures,
                until=new.encode(),
                answer_timeout=30.0,
            )
        )

    thread = threading.Thread(target=simulate, daemon=True)
    called = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + 60 + devices / 100
    while counters(worker)[SYNCS] < syncs + devices:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit(f"the {devices} devices did not all poll the worker")
        time.sleep(0.2)
    time.sleep(poll)  # every device is in its polling rhythm
    counted, cpu0, sim0, busy0 = counters(worker), cpu(procs), time.process_time(), machine_busy()
    wall0, t0 = time.time(), time.perf_counter()
    timeline = Timeline(worker, counted, t0)
    repo.push()
    build_id = webhook(service.url, repo, before, after)
    queued = time.perf_counter() - t0
    thread.join()
    timeline.stop()
    sim_cpu, busy = time.process_time() - sim0, machine_busy() - busy0
    cpu1, counted1 = cpu(procs), counters(worker)
    bad = [r for r in results if not r.synced or r.final != new or r.error]
    if bad or len(results) != devices:
        raise SystemExit(f"{len(bad)} of {devices} devices did not update: {bad[:3]}")
    end = called + max(r.seconds for r in results)
    total = end - t0
    build = wait_build(service, build_id)

    def at(key: str) -> float:  # a record's timestamp, as seconds after t0
        return datetime.fromisoformat(str(build[key])).timestamp() - wall0

    data = {r.patch_bytes if delta else r.bytes_received for r in results}
    image = artifact(state, build)
    return {
        "devices": devices,
        "delta": delta,
        "versions": list(versions),
        "commit": after,
        "build_id": build_id,
        "total_s": total,
        "webhook_answered_s": queued,
        "build_started_s": at("started"),
        "published_s": at("finished"),
        "delivery_s": total - at("finished"),
        "data_bytes_per_device": sorted(data),
        "wire_bytes_per_device": statistics.median(r.wire_bytes for r in results),
        "image_bytes": len(image),
        "image": image,
        "first_update_command_s": timeline.first,
        "worker_counters": {k: counted1[k] - counted[k] for k in COUNTERS},
        "cpu_s": {
            **{name: cpu1[name] - cpu0[name] for name in cpu0},
            "simulator": sim_cpu,
            "machine": busy,
        },
    }


class Timeline:
    """When the worker sent its first update command after the push (its /metrics read
    every ``every`` seconds in a thread of this process)."""

    def __init__(self, worker: Proc, counted: dict[str, float], t0: float, every: float = 0.1):
        self.first: float | None = None
        self._stop = threading.Event()
        keys = COUNTERS[1:4]
        base = sum(counted[k] for k in keys)

        def sample() -> None:
            while self.first is None and not self._stop.wait(every):
                if sum(metrics(worker.url, keys).values()) > base:
                    self.first = time.perf_counter() - t0

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def floor(
    repo: FirmwareRepo, run: dict[str, Any], tmp: Path, repeats: int, echo: float
) -> dict[str, Any]:
    """The build run directly (median of ``repeats``), plus the round trips the update
    takes by the protocol at the echo's rate."""
    times = []
    for _ in range(repeats):
        seconds, image = direct_build(repo, run["commit"], run["versions"][1], tmp / "direct")
        times.append(seconds)
    if image != run["image"]:
        raise SystemExit("the direct build made other bytes than the triggered build")
    data = max(run["data_bytes_per_device"])
    trips = update_round_trips(data) * run["devices"]
    build = statistics.median(times)
    return {
        "build_s": build,
        "build_runs_s": times,
        "round_trips": trips,
        "round_trips_per_device": update_round_trips(data),
        "echo_round_trips_per_s": echo,
        "delivery_s": trips / echo,
        "total_s": build + trips / echo,
    }
