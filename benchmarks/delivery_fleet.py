"""The delivery benchmark's fleet update (part 2): every device updated over MQTT with
``simulate_mqtt``, its bytes checked against a replay of one device's exchange."""

from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

from benchmarks.delivery_fixtures import (
    APP,
    COMMAND_TOPIC,
    FLEET_DEVICES,
    IMAGE_SIZE,
    MTU,
    START,
    STATUS_TOPIC,
    TARGET,
    process_cpu,
)
from benchmarks.delivery_responders import Responder
from delivery.decision import FirmwareImage, decide
from delivery.device import SimulatedDevice
from delivery.mqtt_simulator import simulate_mqtt
from delivery.protocol import (
    Swap,
    Sync,
    Write,
    decode_command,
    decode_status,
    encode_command,
    encode_status,
)

FLEET_TIMEOUT_S = 100.0


def publish_bytes(topic: str, payload: int, qos: int) -> int:
    """MQTT bytes for one message over one hop: the PUBLISH packet, plus its PUBACK at QoS 1.

    Through a broker every message makes two hops (sender to broker, broker to receiver).
    """
    remaining = 2 + len(topic) + (2 if qos else 0) + payload
    head = 1 + (1 if remaining < 128 else 2 if remaining < 16384 else 3)
    return head + remaining + (4 if qos else 0)


@dataclass
class Replay:
    """Every message one device exchanges while updating, from decide() and the codec."""

    steps: int = 0
    status_bytes: int = 0
    command_bytes: int = 0
    writes: int = 0
    write_framing: int = 0
    swap_bytes: int = 0
    sync_bytes: int = 0
    status_sizes: tuple[int, ...] = ()
    command_sizes: tuple[int, ...] = ()


def replay(firmware: FirmwareImage) -> Replay:
    out = Replay()
    device = SimulatedDevice(START, MTU)
    statuses: list[int] = []
    commands: list[int] = []
    for _ in range(4 * IMAGE_SIZE // MTU + 16):  # bounded: 258 steps expected
        status = encode_status(device.status())
        command = decide(decode_status(status), firmware)
        payload = encode_command(command)
        statuses.append(len(status))
        commands.append(len(payload))
        if isinstance(command, Write):
            out.writes += 1
            out.write_framing += len(payload) - len(command.data)
        elif isinstance(command, Swap):
            out.swap_bytes += len(payload)
        elif isinstance(command, Sync):
            out.sync_bytes += len(payload)
        device.apply(decode_command(payload))
        if device.synced:
            break
    out.steps = len(statuses)
    out.status_bytes, out.command_bytes = sum(statuses), sum(commands)
    out.status_sizes, out.command_sizes = tuple(statuses), tuple(commands)
    return out


def fleet_update(
    ctx: SpawnContext, port: int, root: Path, image: bytes, broker: int | None
) -> dict[str, Any]:
    qos = 1
    names = [f"dev{i}" for i in range(FLEET_DEVICES)]
    responder = Responder(ctx, "worker", port, qos, root)
    try:
        before = responder.stats()
        cpu0, broker0 = time.process_time(), process_cpu(broker)
        started = time.perf_counter()
        results = simulate_mqtt(
            f"mqtt://127.0.0.1:{port}",
            APP,
            names,
            START,
            MTU,
            qos=qos,
            timeout=FLEET_TIMEOUT_S,
        )
        wall = time.perf_counter() - started
        cpu1, broker1 = time.process_time(), process_cpu(broker)
        after = responder.stats()
    finally:
        responder.close()
    plan = replay(FirmwareImage.from_image(TARGET.encode(), image))
    failed = [
        r.device
        for r in results
        if not r.synced or r.final != TARGET or r.bytes_received != IMAGE_SIZE
    ]
    if failed:
        raise SystemExit(f"{len(failed)} devices did not update, for example {failed[:3]}")
    off_plan = [r.device for r in results if r.steps != plan.steps]
    steps = sum(r.steps for r in results)
    handled = after["handled"] - before["handled"]
    if off_plan or handled != steps:
        raise SystemExit(
            f"the exchange differs from the replay: {len(off_plan)} devices took other than"
            f" {plan.steps} steps; the worker handled {handled} statuses for {steps} steps"
        )
    n = len(results)
    status_bytes, command_bytes = n * plan.status_bytes, n * plan.command_bytes
    actual = status_bytes + command_bytes
    ideal = n * (IMAGE_SIZE + plan.write_framing + plan.swap_bytes + plan.sync_bytes)
    mqtt_bytes = 0
    for name in names:
        status_topic = STATUS_TOPIC.format(app=APP, device=name)
        command_topic = COMMAND_TOPIC.format(app=APP, device=name)
        mqtt_bytes += sum(publish_bytes(status_topic, s, qos) for s in plan.status_sizes)
        mqtt_bytes += sum(publish_bytes(command_topic, c, qos) for c in plan.command_sizes)
    return {
        "devices": n,
        "qos": qos,
        "image_bytes": IMAGE_SIZE,
        "mtu": MTU,
        "wall_s": wall,
        "slowest_device_s": max(r.seconds for r in results),
        "round_trips": steps,
        "round_trips_per_s": steps / wall,
        "steps_per_device": plan.steps,
        "writes_per_device": plan.writes,
        "bytes": {
            "statuses": status_bytes,
            "commands": command_bytes,
            "actual": actual,
            "ideal": ideal,
            "image_total": n * IMAGE_SIZE,
            "write_framing_per_device": plan.write_framing,
            "swap": plan.swap_bytes,
            "sync": plan.sync_bytes,
            "mqtt_per_hop_computed": mqtt_bytes,
        },
        "efficiency": ideal / actual,
        "image_over_actual": n * IMAGE_SIZE / actual,
        "image_over_mqtt": n * IMAGE_SIZE / mqtt_bytes,
        "cpu_us_per_trip": {
            "worker": (after["cpu_s"] - before["cpu_s"]) / steps * 1e6,
            "handle": (after["handle_s"] - before["handle_s"]) / steps * 1e6,
            "driver": (cpu1 - cpu0) / steps * 1e6,
            "broker": (broker1 - broker0) / steps * 1e6,
        },
        "worker_counters": after.get("counters", {}),
    }
