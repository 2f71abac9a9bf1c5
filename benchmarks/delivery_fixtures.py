"""The delivery benchmark's fixtures: the constants, the fleet and the published image, the
mosquitto broker, and the CPU time of a process read from /proc."""

from __future__ import annotations

import getpass
import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ajour_build.publish.destination import publisher_for
from ajour_build.publish.publisher import FirmwareArtifact
from delivery.mqtt import MqttSettings
from tests.broker import MOSQUITTO, run_broker
from tests.registry import free_port

KIB = 1024
IMAGE_SIZE = 128 * KIB
MTU = 512
APP = "app"
START = b"0.1"
TARGET = "4.0"
FLEET_DEVICES = 200
STATUS_TOPIC = MqttSettings.status_topic
COMMAND_TOPIC = MqttSettings.command_topic


def prepare(root: Path, devices: int) -> bytes:
    """A fleet of ``devices`` under ``root/fleet`` and the image as ``fw/app:latest``."""
    (root / "fleet").mkdir(parents=True, exist_ok=True)
    docs = [
        f"kind: Application\nmetadata: {{name: {APP}}}\n"
        "spec: {firmware: {container: {image: fw/app:latest}}}\n"
    ]
    docs += [
        f"kind: Device\nmetadata: {{name: dev{i}, application: {APP}}}\n" for i in range(devices)
    ]
    (root / "fleet" / "fleet.yaml").write_text("---\n".join(docs), encoding="utf-8")
    image = random.Random(0).randbytes(IMAGE_SIZE)
    path = root / "fw.bin"
    path.write_bytes(image)
    publisher_for(f"oci-layout://{root / 'oci' / 'fw' / 'app'}:latest", {}).publish(
        FirmwareArtifact(path, TARGET)
    )
    return image


@contextmanager
def broker(tmp: Path, tcp_nodelay: bool, extra: str = "") -> Iterator[int]:
    """mosquitto on a free loopback port; yield the port. ``extra``: more configuration
    lines (with ``tcp_nodelay`` only).

    Without ``tcp_nodelay`` this is ``tests/broker.py`` unchanged (mosquitto's default,
    ``set_tcp_nodelay false``). With it, the same configuration plus ``set_tcp_nodelay
    true``: without that line the broker's own sockets keep Nagle's algorithm, and a QoS 1
    round trip with few devices in flight waits ~40 ms for a delayed ACK, whatever the
    clients set.
    """
    if not tcp_nodelay:
        with run_broker(tmp) as port:
            yield port
        return
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\npersistence false\nuser {getpass.getuser()}\n"
        "allow_anonymous true\nset_tcp_nodelay true\n" + extra
    )
    with (tmp / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    raise SystemExit((tmp / "mosquitto.log").read_text()[-2000:])
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("mosquitto did not start within 10 s") from None
                    time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def find_pid(needle: str) -> int | None:
    """The process whose command line holds ``needle`` (our own mosquitto's config path)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle.encode() in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    return None


def process_cpu(pid: int | None) -> float:
    """user + system CPU seconds of ``pid`` (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
