"""The delivery benchmark's codec and decision timings (part 3), and ``Worker.handle`` taken
apart step by step."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import timing
from benchmarks.delivery_fixtures import APP, KIB, MTU, START, TARGET
from benchmarks.delivery_fleet import replay
from benchmarks.delivery_responders import make_worker, write_reply
from delivery.decision import FirmwareImage, decide
from delivery.protocol import (
    Status,
    UpdateStatus,
    Write,
    decode_command,
    decode_status,
    encode_command,
    encode_status,
)
from delivery.store import StatusStore


def per_op_ns(fn: Callable[[], object]) -> float:
    return timing.per_op_ns(fn, budget_s=0.08)


def codec(image: bytes) -> dict[str, Any]:
    firmware = FirmwareImage.from_image(TARGET.encode(), image)
    offset = 64 * KIB
    write = Write(TARGET.encode(), 7, offset, image[offset : offset + MTU])
    write_bytes = encode_command(write)
    status = Status(START, MTU, 7, UpdateStatus(TARGET.encode(), offset))
    status_bytes = encode_status(status)
    call = per_op_ns(lambda: None)
    ops: dict[str, Callable[[], object]] = {
        "encode_command(Write 512 B)": lambda: encode_command(write),
        "decode_command(Write 512 B)": lambda: decode_command(write_bytes),
        "encode_status(with update)": lambda: encode_status(status),
        "decode_status(with update)": lambda: decode_status(status_bytes),
        "decide(status, 128 KiB target)": lambda: decide(status, firmware),
    }
    ns = {name: per_op_ns(fn) - call for name, fn in ops.items()}
    framing = {
        f"offset {off} ({label})": len(write_reply(image, off)) - MTU
        for off, label in ((0, "1-byte offset"), (512, "3-byte"), (offset, "5-byte"))
    }
    plan = replay(firmware)
    return {
        "call_overhead_ns": call,
        "ns_per_op": ns,
        "status_bytes": len(status_bytes),
        "write_bytes": len(write_bytes),
        "write_framing_bytes": framing,
        "write_framing_mean": plan.write_framing / plan.writes,
    }


HANDLE_STEPS = (
    "targets.knows",
    "decode_status",
    "targets.source (effective spec, model_dump_json key)",
    "source.target (OCI layout: index, manifest, config; blob LRU)",
    "FirmwareImage(...)",
    "decide",
    "counters.add",
    "_observed (firmware_spec, DeviceStatus)",
    "store.observe, in-memory SQLite (serve default)",
    "encode_command",
)


def handle_parts(root: Path, iterations: int = 2000) -> dict[str, Any]:
    """Where ``Worker.handle`` spends its time: its steps, one by one, timed in place.

    Each iteration replays the steps of ``Worker.handle`` for a 512-byte Write (the same
    calls, in the same order, on the same objects), then calls ``Worker.handle`` itself, and
    also times an upsert into a file-backed store (``serve --store``) for comparison. Timing
    the steps in place, rather than each in a tight loop of its own, keeps the caches as
    cold or warm as they are in the worker; the medians of the steps add up to the whole.
    """
    worker = make_worker(root)
    file_store = StatusStore(root / "status.db")
    targets, counters, app, device = worker.targets, worker.counters, APP, "dev0"
    payload = encode_status(Status(START, MTU, None, UpdateStatus(TARGET.encode(), 64 * KIB)))
    clock = time.perf_counter_ns
    samples: list[list[int]] = [[] for _ in range(len(HANDLE_STEPS) + 2)]
    gc.collect()
    for _ in range(iterations):
        t0 = clock()
        targets.knows(app, device)
        t1 = clock()
        status = decode_status(payload)
        t2 = clock()
        source = targets.source(app, device)
        t3 = clock()
        assert source is not None
        found = source.target()
        t4 = clock()
        firmware = FirmwareImage(found.version, found.data, found.checksum)
        t5 = clock()
        command = decide(status, firmware)
        t6 = clock()
        counters.add(type(command).__name__.lower())
        t7 = clock()
        observed = worker._observed(app, device, status, firmware, command, "")
        t8 = clock()
        assert worker.store is not None
        worker.store.observe(observed)
        t9 = clock()
        encode_command(command)
        t10 = clock()
        worker.handle(app, device, payload)
        t11 = clock()
        file_store.observe(observed)
        t12 = clock()
        marks = (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12)
        for i, series in enumerate(samples):
            series.append(marks[i + 1] - marks[i])
    file_store.close()
    medians = [statistics.median(series) / 1e3 for series in samples]
    steps = dict(zip(HANDLE_STEPS, medians, strict=False))
    return {
        "iterations": iterations,
        "us_median": steps,
        "steps_sum_us": sum(steps.values()),
        "handle_us": medians[len(HANDLE_STEPS)],
        "handle_mean_us": statistics.fmean(samples[len(HANDLE_STEPS)]) / 1e3,
        "file_store_observe_us": medians[-1],
    }
