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
from delivery.worker import _reply


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
    "targets.route (device -> shared source and spec kind)",
    "source.target (OCI layout: stat index.json; cached image)",
    "replies.get (memo lookup)",
    "decode_status (memo miss)",
    "decide (memo miss)",
    "_reply: encode_command and what the store records (memo miss)",
    "replies.put (memo miss)",
    "store.record (newest row per device, in memory)",
    "counters.answered (one lock)",
)


def handle_parts(root: Path, iterations: int = 2000) -> dict[str, Any]:
    """Where ``Worker.handle`` spends its time: its steps, one by one, timed in place.

    Each iteration replays the steps of ``Worker.handle`` for a 512-byte Write (the same
    calls, in the same order, on the same objects, the miss path's steps included), then
    calls ``Worker.handle`` itself twice: once with the status in the reply memo (a hit,
    as for every device after the first that walks the same offsets), once with the memo
    emptied first (a miss: decode, decide, encode). It also times a status store write to a
    file-backed store (``serve --store``) with a flush, for comparison. Timing the steps in
    place, rather than each in a tight loop of its own, keeps the caches as cold or warm as
    they are in the worker.
    """
    worker = make_worker(root)
    file_store = StatusStore(root / "status.db")
    targets, counters, replies, app, device = (
        worker.targets,
        worker.counters,
        worker.replies,
        APP,
        "dev0",
    )
    payload = encode_status(Status(START, MTU, None, UpdateStatus(TARGET.encode(), 64 * KIB)))
    policy = worker.policy
    assert worker.store is not None
    store = worker.store
    clock = time.perf_counter_ns
    samples: list[list[int]] = [[] for _ in range(len(HANDLE_STEPS) + 4)]
    gc.collect()
    for _ in range(iterations):
        replies.clear()
        t0 = clock()
        route = targets.route(app, device)
        t1 = clock()
        assert route is not None and route.source is not None
        target = route.source.target()
        t2 = clock()
        replies.get(target, policy, payload)
        t3 = clock()
        status = decode_status(payload)
        t4 = clock()
        command = decide(status, target, policy)
        t5 = clock()
        reply = _reply(status, target, command, "")
        t6 = clock()
        replies.put(target, policy, payload, reply)
        t7 = clock()
        store.record(app, device, reply.observed, route.kind, "")
        t8 = clock()
        counters.answered(reply.kind, reply.served, "memo_miss", 0.0)
        t9 = clock()
        worker.handle(app, device, payload)
        t10 = clock()
        replies.clear()
        t11 = clock()
        worker.handle(app, device, payload)
        t12 = clock()
        file_store.record(app, device, reply.observed, route.kind, "")
        file_store.flush()
        t13 = clock()
        marks = (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13)
        for i, series in enumerate(samples):
            if i == len(HANDLE_STEPS) + 1:
                continue  # the clear between the two handles
            series.append(marks[i + 1] - marks[i])
    file_store.close()
    medians = [statistics.median(series) / 1e3 if series else 0.0 for series in samples]
    steps = dict(zip(HANDLE_STEPS, medians, strict=False))
    return {
        "iterations": iterations,
        "us_median": steps,
        "steps_sum_us": sum(steps.values()),
        "handle_hit_us": medians[len(HANDLE_STEPS)],
        "handle_miss_us": medians[len(HANDLE_STEPS) + 2],
        "file_store_record_flush_us": medians[-1],
    }
