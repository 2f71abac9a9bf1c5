"""Delivery on several MQTT broker nodes (independent mosquittos, no bridge): every worker
joins the shared subscription on every node, devices are spread over the nodes and fail
over to the next one when theirs dies. Every status is answered exactly once, and no device
ever gets two answers to one status (the simulated devices count them)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from delivery.mqtt import MqttSettings, MqttTransport
from delivery.mqtt_simulator import Connection, simulate_mqtt
from delivery.simulator import DeviceResult
from delivery.store import StatusStore
from delivery.worker import Worker
from tests.broker_nodes import BrokerNode, broker_nodes
from tests.mqtt_layout import layout_worker

ANSWERS = ("write", "swap", "sync", "wait")


def answered(worker: Worker) -> int:
    return sum(v for k, v in worker.counters.snapshot().items() if k in ANSWERS)


@contextmanager
def workers_on(nodes: list[BrokerNode], workers: list[Worker]) -> Iterator[None]:
    """Each worker joins the group on every node, as ``serve --mqtt A --mqtt B …`` does."""
    with ExitStack() as stack:
        for worker in workers:
            for node in nodes:
                transport = MqttTransport(worker, MqttSettings(url=node.url, group="ajour"))
                transport.start()
                stack.callback(transport.stop)
        yield


def test_three_nodes_answer_every_status_exactly_once(tmp_path: Path) -> None:
    worker_a = layout_worker(tmp_path)
    worker_b = Worker(worker_a.targets, StatusStore())
    names = [f"dev{i}" for i in range(60)]
    with broker_nodes(tmp_path, 3) as nodes, workers_on(nodes, [worker_a, worker_b]):
        results = simulate_mqtt(
            [n.url for n in nodes], "app", names, b"0.1", 1024, timeout=120, correlate=True
        )
    assert [r.final for r in results] == ["4.0"] * 60, [r.error for r in results if r.error]
    assert sum(r.duplicates for r in results) == 0, "a device got two answers to one status"
    assert sum(r.failovers for r in results) == 0
    statuses, replies = sum(r.statuses for r in results), sum(r.steps for r in results)
    handled = answered(worker_a) + answered(worker_b)
    assert statuses == replies == handled, (statuses, replies, handled)
    per_node = [sum(r.statuses for r in results[i::3]) for i in range(3)]  # dev i on node i%3
    assert per_node == [statuses // 3] * 3, per_node  # 20 devices, the same exchange each
    assert min(answered(worker_a), answered(worker_b)) > handled * 0.1


@pytest.mark.parametrize("connection", ["gateway", "device"])
def test_a_node_killed_mid_run_its_devices_move_and_converge(
    tmp_path: Path, connection: Connection
) -> None:
    worker_a = layout_worker(tmp_path, image=b"k" * 32768)
    worker_b = Worker(worker_a.targets, StatusStore())
    names = [f"dev{i}" for i in range(30)]
    results: list[DeviceResult] = []
    with broker_nodes(tmp_path, 3) as nodes, workers_on(nodes, [worker_a, worker_b]):
        urls = [n.url for n in nodes]

        def simulate() -> None:
            got = simulate_mqtt(urls, "app", names, b"0.1", 256, timeout=120, correlate=True,
                                connection=connection)  # fmt: skip
            results.extend(got)

        run = threading.Thread(target=simulate)
        run.start()
        total = 30 * (32768 // 256 + 2)
        deadline = time.monotonic() + 60
        while answered(worker_a) + answered(worker_b) < total // 3:
            assert time.monotonic() < deadline and run.is_alive(), "no progress before the kill"
            time.sleep(0.01)
        nodes[0].kill()
        run.join(150)
    assert not run.is_alive()
    assert [r.final for r in results] == ["4.0"] * 30, [r.error for r in results if r.error]
    assert all(r.bytes_received == 32768 for r in results)
    assert sum(r.duplicates for r in results) == 0, "a device got two answers to one status"
    moved = [r.failovers for r in results[0::3]]  # dev0, dev3, … started on node 0
    assert moved == [1] * 10, moved
    assert all(r.failovers == 0 for i, r in enumerate(results) if i % 3), "only node 0 died"
    statuses, replies = sum(r.statuses for r in results), sum(r.steps for r in results)
    handled = answered(worker_a) + answered(worker_b)
    # at the kill, each of node 0's 10 devices had at most one status in flight: it was
    # lost before a worker got it, or answered into the dead node; either way sent again
    assert replies <= handled <= statuses, (replies, handled, statuses)
    assert statuses - replies <= 10, (statuses, replies)


@pytest.mark.parametrize("connection", ["gateway", "device"])
def test_a_slow_failover_does_not_count_as_an_unanswered_status(
    tmp_path: Path, connection: Connection
) -> None:
    """The node a device fails over to is stuck (SIGSTOP: TCP connects, no CONNACK) for
    longer than the answer timeout, then resumes: the device waits for the connection, sends
    its status again once subscribed, and converges; it is not ended with "no answer"."""
    worker = layout_worker(tmp_path, image=b"s" * 16384)
    results: list[DeviceResult] = []
    with broker_nodes(tmp_path, 2) as nodes, workers_on(nodes, [worker]):
        urls = [n.url for n in nodes]

        def simulate() -> None:  # dev0 starts on node 0
            got = simulate_mqtt(urls, "app", ["dev0"], b"0.1", 256, timeout=60,
                                answer_timeout=1.0, connection=connection)  # fmt: skip
            results.extend(got)

        run = threading.Thread(target=simulate)
        run.start()
        deadline = time.monotonic() + 30
        while answered(worker) < 10:
            assert time.monotonic() < deadline and run.is_alive(), "no progress before the kill"
            time.sleep(0.01)
        nodes[1].proc.send_signal(signal.SIGSTOP)
        try:
            nodes[0].kill()
            time.sleep(3.0)  # three answer timeouts without a usable connection
        finally:
            nodes[1].proc.send_signal(signal.SIGCONT)
        run.join(60)
    assert not run.is_alive()
    (result,) = results
    assert result.error == "" and result.final == "4.0", result.error
    assert result.failovers == 1 and result.bytes_received == 16384


def test_serve_and_simulate_take_several_nodes(tmp_path: Path) -> None:
    """``serve --mqtt A --mqtt B`` joins both; ``simulate --mqtt A --mqtt B`` spreads the
    devices: those on B converge only if the worker serves B too."""
    layout_worker(tmp_path)
    cli = [sys.executable, "-m", "delivery.cli"]
    with broker_nodes(tmp_path, 2) as nodes:
        urls = [arg for node in nodes for arg in ("--mqtt", node.url)]
        proc = subprocess.Popen(
            [*cli, "serve", "--fleet", str(tmp_path / "fleet"), *urls,
             "--registry", f"oci-layout://{tmp_path / 'oci'}"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            ready = ""
            deadline = time.monotonic() + 20
            while "devices in the fleet" not in ready and time.monotonic() < deadline:
                line = proc.stderr.readline() if proc.stderr else ""
                ready += line
                if not line and proc.poll() is not None:
                    break
            for node in nodes:
                assert f"at mqtt://127.0.0.1:{node.port}" in ready, ready
            sim = subprocess.run(
                [*cli, "simulate", *urls, "--app", "app", "--devices", "8",
                 "--start-version", "0.1", "--json"],
                capture_output=True, text=True, timeout=90,
            )  # fmt: skip
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
            if proc.stderr:
                proc.stderr.close()
    assert sim.returncode == 0, sim.stderr
    report = json.loads(sim.stdout)
    assert report["versions"] == {"4.0": 8} and report["failed"] == 0
    assert all(d["duplicates"] == 0 and d["statuses"] == d["steps"] for d in report["devices"])


def carried(source: BrokerNode, to: BrokerNode) -> None:
    """Wait until the bridge carries a message from ``source`` to ``to``."""
    got = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = lambda *_: got.set()
    sub.connect("127.0.0.1", to.port)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", source.port)
    pub.loop_start()
    try:
        sub.subscribe("ajour/probe", qos=1)
        deadline = time.monotonic() + 10
        while not got.wait(0.1):
            assert time.monotonic() < deadline, "the bridge does not carry messages"
            pub.publish("ajour/probe", b"", qos=1)
    finally:
        for client in (sub, pub):
            client.disconnect()
            client.loop_stop()


def test_a_bridge_that_carries_statuses_has_them_answered_twice(tmp_path: Path) -> None:
    """Why the nodes are not bridged: shared subscriptions do not span a mosquitto bridge,
    so a status bridged to the other node is answered there too, by that node's group."""
    worker_a = layout_worker(tmp_path)
    worker_b = Worker(worker_a.targets, StatusStore())
    with ExitStack() as stack:
        a = BrokerNode(tmp_path / "a")
        stack.callback(a.close)
        bridge = f"connection to-a\naddress 127.0.0.1:{a.port}\ntopic ajour/# both 1\n"
        b = BrokerNode(tmp_path / "b", bridge + "try_private true\n")
        stack.callback(b.close)
        for worker, node in ((worker_a, a), (worker_b, b)):
            transport = MqttTransport(worker, MqttSettings(url=node.url, group="ajour"))
            transport.start()
            stack.callback(transport.stop)
        carried(a, b)
        carried(b, a)
        results = simulate_mqtt(
            [a.url, b.url], "app", [f"dev{i}" for i in range(10)], b"0.1", 1024,
            timeout=60, correlate=True,
        )  # fmt: skip
        statuses = sum(r.statuses for r in results)
        deadline = time.monotonic() + 10  # the last statuses' second answers
        while (
            min(answered(worker_a), answered(worker_b)) < statuses and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    assert answered(worker_a) == answered(worker_b) == statuses  # each worker answered all
    # the second answers that came while the device waited for its next status (the rest
    # came after it had synced, or after the run)
    assert sum(r.duplicates for r in results) > 0
