"""Delta updates end to end: two real firmware builds (arm-none-eabi-gcc) with a one-line
change, published by ``ajour-build publish`` to the real registry and to an OCI layout with a
patch layer, served by the real worker over HTTP and MQTT to simulated devices that rebuild
the exact new image from the patch; devices without the capability get the full image, and
a device whose patch fails falls back to it. The bytes on the wire are measured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from ajour_build.cli import main as build_cli
from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.patches import patch_layers
from ajour_build.core.artifact.reference import OciRef
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.fleet import load_fleet
from delivery.delta import apply_patch
from delivery.device import SimulatedDevice
from delivery.http import HttpSettings, HttpTransport
from delivery.mqtt import MqttSettings, MqttTransport
from delivery.mqtt_simulator import simulate_mqtt
from delivery.protocol import Write, WritePatch, decode_command
from delivery.simulator import Failures, HttpDeviceLink, run_device
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.broker import run_broker
from tests.conftest import EXAMPLES, REPO
from tests.http_wire import EVENTS_TOKEN, STATUS_TOKEN
from tests.registry import run_registry

pytestmark = pytest.mark.slow

DEVICES = ("delta", "delta2", "full", "bad", "mq")
FLEET = "---\n".join(
    [
        "kind: Application\nmetadata: {name: blinky}\n"
        "spec: {firmware: {container: {image: fw/blinky:latest}}}\n",
        *(
            f"metadata: {{name: {name}, application: blinky}}\n"
            f"spec: {{credentials: {{credentials: [{{pass: pw-{name}}}]}}}}\n"
            for name in DEVICES
        ),
    ]
)


def build_blinky(tmp: Path, version: str, blinks: int) -> bytes:
    """c-blinky at ``version``; ``blinks`` is the one line that changes."""
    src = tmp / f"c-blinky-{version}"
    shutil.copytree(EXAMPLES / "firmware" / "c-blinky", src, ignore=shutil.ignore_patterns("build"))
    main_c = src / "src" / "main.c"
    text = main_c.read_text()
    assert "#define BLINKS 4u\n" in text
    main_c.write_text(text.replace("#define BLINKS 4u\n", f"#define BLINKS {blinks}u\n"))
    env = {**os.environ, "AJOUR_FIRMWARE_VERSION": version}
    subprocess.run(["make", "-s", "-C", str(src)], env=env, check=True, capture_output=True)
    return (src / "build" / "blinky.bin").read_bytes()


def build_updater(tmp: Path, version: str) -> bytes:
    """The device updater application of device/boot (4 KiB), stamped with ``version``."""
    out = tmp / "updater"
    subprocess.run(
        ["make", "-s", "-C", str(REPO / "device" / "boot"), "device",
         f"APP_VERSION={version}", f"BUILD={out}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return (out / f"app-device-{version}.bin").read_bytes()


@dataclass
class Wire:
    """Counts what crosses the link: statuses sent, commands received, and Write/WritePatch
    data (the firmware or patch bytes) with their CBOR framing."""

    exchange: Callable[[bytes], bytes]
    statuses: int = 0
    commands: int = 0
    writes: int = 0  # whole Write/WritePatch commands: data + framing
    data: int = 0  # their data alone
    kinds: tuple[str, ...] = ()

    def __call__(self, status: bytes) -> bytes:
        reply = self.exchange(status)
        self.statuses += len(status)
        self.commands += len(reply)
        command = decode_command(reply)
        self.kinds += (type(command).__name__,)
        if isinstance(command, Write | WritePatch):
            self.writes += len(reply)
            self.data += len(command.data)
        return reply

    def reset(self) -> None:
        reset = getattr(self.exchange, "reset", None)
        if callable(reset):
            reset()


def update(url: str, name: str, device: SimulatedDevice) -> Wire:
    link = HttpDeviceLink(url, "blinky", name, f"pw-{name}")
    wire = Wire(link)
    try:
        result = run_device("blinky", name, device, wire)
    finally:
        link.close()
    assert result.synced and not result.error, result
    assert result.wire_bytes == wire.statuses + wire.commands
    return wire


def publish(to: str, image: Path, version: str) -> None:
    result = CliRunner().invoke(
        build_cli, ["publish", str(image), "--to", to, "--version", version, "--json"]
    )
    assert result.exit_code == 0, result.output


def measure(url: str, old: bytes, new: bytes, patch: bytes) -> dict[str, float]:
    """Update a delta device, a second one (answered from the reply memo), a device without
    the capability and one whose flash differs; check each ends with the exact new image."""
    delta = SimulatedDevice(b"1.0.0", 512, firmware=old, delta=True)
    by_patch = update(url, "delta", delta)
    assert delta.version == b"1.1.0" and delta.firmware == new
    assert delta.patch_bytes == by_patch.data == len(patch) and not delta.patch_failed
    assert set(by_patch.kinds) == {"WritePatch", "Swap", "Sync"}

    again = SimulatedDevice(b"1.0.0", 512, firmware=old, delta=True)
    assert update(url, "delta2", again).kinds == by_patch.kinds and again.firmware == new

    full = SimulatedDevice(b"1.0.0", 512, firmware=old)
    by_image = update(url, "full", full)
    assert full.firmware == new and full.patch_bytes == 0 and by_image.data == len(new)
    assert "WritePatch" not in by_image.kinds

    flipped = bytearray(old)
    flipped[len(old) // 2] ^= 0xFF  # its flash is not the image the patch was made from
    bad = SimulatedDevice(b"1.0.0", 512, firmware=bytes(flipped), delta=True)
    fallback = update(url, "bad", bad)
    assert bad.patch_failed and bad.firmware == new and bad.version == b"1.1.0"
    assert fallback.kinds.index("Write") > fallback.kinds.index("WritePatch")

    return {
        "image": len(new),
        "patch": len(patch),
        "writes_full": by_image.writes,
        "writes_delta": by_patch.writes,
        "wire_full": by_image.statuses + by_image.commands,
        "wire_delta": by_patch.statuses + by_patch.commands,
        "ratio_writes": by_image.writes / by_patch.writes,
        "ratio_wire": (by_image.statuses + by_image.commands)
        / (by_patch.statuses + by_patch.commands),
    }


def serve(worker: Worker) -> HttpTransport:
    settings = HttpSettings(port=0, status_token=STATUS_TOKEN, events_token=EVENTS_TOKEN)
    transport = HttpTransport(worker, settings)
    transport.start()
    return transport


def test_c_blinky_by_patch_from_the_registry_over_http_and_mqtt(tmp_path: Path) -> None:
    old, new = build_blinky(tmp_path, "1.0.0", 4), build_blinky(tmp_path, "1.1.0", 5)
    assert old != new
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "new.bin").write_bytes(new)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    with run_registry(tmp_path / "registry") as registry:
        to = f"oci://{registry.host}/fw/blinky:latest"
        publish(to, tmp_path / "old.bin", "1.0.0")
        publish(to, tmp_path / "new.bin", "1.1.0")
        reader = RegistryReader(registry.host)
        info = reader.inspect(OciRef(registry.host, "fw/blinky", "latest"))
        (layer,) = patch_layers(info)[0]
        patch = reader.blob("fw/blinky", layer.descriptor)
        assert layer.from_version == "1.0.0" and apply_patch(old, patch) == new

        worker = Worker(Targets(load_fleet([tmp_path / "fleet"]), registry.host), StatusStore())
        transport = serve(worker)
        try:
            numbers = measure(transport.url, old, new, patch)
        finally:
            transport.stop()
        assert worker.counters.snapshot()["memo_hit"] > 0  # delta2 repeated delta's statuses
        assert numbers["ratio_writes"] >= 5, numbers

        with run_broker(tmp_path / "mqtt") as port:
            mqtt = MqttTransport(worker, MqttSettings(url=f"mqtt://127.0.0.1:{port}"))
            mqtt.start()
            try:
                (result,) = simulate_mqtt(
                    f"mqtt://127.0.0.1:{port}", "blinky", ["mq"], b"1.0.0", 512, timeout=60,
                    failures=Failures(firmware=old, delta=True),
                )  # fmt: skip
            finally:
                mqtt.stop()
    assert result.final == "1.1.0" and result.synced and not result.patch_failed
    assert result.patch_bytes == result.bytes_received == len(patch)
    numbers["wire_mqtt_delta"] = result.wire_bytes
    print("\nc-blinky, registry:", json.dumps(numbers))


def test_updater_firmware_by_patch_from_a_layout_is_20x_fewer_bytes(tmp_path: Path) -> None:
    old, new = build_updater(tmp_path, "1.0.0"), build_updater(tmp_path, "1.1.0")
    assert old != new and len(old) == len(new)
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "new.bin").write_bytes(new)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    to = f"oci-layout://{tmp_path / 'oci' / 'fw' / 'blinky'}:latest"
    publish(to, tmp_path / "old.bin", "1.0.0")
    publish(to, tmp_path / "new.bin", "1.1.0")
    store = LayoutStore(tmp_path / "oci" / "fw" / "blinky")
    (layer,) = patch_layers(store.inspect("latest"))[0]
    patch = store.read_blob(layer.descriptor.digest)

    worker = Worker(
        Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}"),
        StatusStore(),
    )
    transport = serve(worker)
    try:
        numbers = measure(transport.url, old, new, patch)
    finally:
        transport.stop()
    print("\nupdater, layout:", json.dumps(numbers))
    assert numbers["ratio_writes"] >= 20 and numbers["ratio_wire"] >= 20, numbers


def test_simulate_cli_with_delta(tmp_path: Path) -> None:
    """``ajour-delivery simulate --delta --firmware OLD`` updates by patch and reports it."""
    from delivery.cli import main as delivery_cli

    old = bytes(range(256)) * 16
    new = old[:2000] + b"\x07" + old[2001:]
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "new.bin").write_bytes(new)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(
        "kind: Application\nmetadata: {name: blinky}\n"
        "spec: {firmware: {container: {image: fw/blinky:latest}}}\n"
        + "".join(
            f"---\nmetadata: {{name: dev{i}, application: blinky}}\n"
            "spec: {credentials: {credentials: [{pass: pw}]}}\n"
            for i in range(3)
        )
    )
    to = f"oci-layout://{tmp_path / 'oci' / 'fw' / 'blinky'}:latest"
    publish(to, tmp_path / "old.bin", "1.0.0")
    publish(to, tmp_path / "new.bin", "1.1.0")
    store = LayoutStore(tmp_path / "oci" / "fw" / "blinky")
    (layer,) = patch_layers(store.inspect("latest"))[0]
    worker = Worker(
        Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}"),
        StatusStore(),
    )
    transport = serve(worker)
    common = ["simulate", "--http", transport.url, "--app", "blinky", "--start-version", "1.0.0",
              "--devices", "3", "--password", "pw"]  # fmt: skip
    try:
        refused = CliRunner().invoke(delivery_cli, [*common, "--delta"])
        done = CliRunner().invoke(
            delivery_cli, [*common, "--delta", "--firmware", str(tmp_path / "old.bin"), "--json"]
        )
        text = CliRunner().invoke(delivery_cli, [*common, "--start-version", "0.9.0"])
    finally:
        transport.stop()
    assert refused.exit_code != 0 and "--delta needs --firmware FILE" in refused.output
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["versions"] == {"1.1.0": 3}
    assert {d["patchBytes"] for d in report["devices"]} == {layer.descriptor.size}
    assert all(d["bytesReceived"] == d["patchBytes"] for d in report["devices"])
    assert text.exit_code == 0, text.output  # no patch from 0.9.0: the full image
    assert f"received {3 * len(new)} bytes (0 of them patch bytes)" in text.output
