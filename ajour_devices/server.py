"""The real worker behind its HTTP transport, in this process, for emulated devices and
their gateways: a fleet of devices with passwords (``pw-<name>``), its firmware published to
an OCI image layout directory, optionally with a staged rollout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ajour_build.core.fleet import load_fleet
from ajour_build.publish.destination import publisher_for
from ajour_build.publish.publisher import FirmwareArtifact
from ajour_devices.firmware import build_device_firmware, signed_image
from delivery.gateway import HttpUplink
from delivery.http import HttpSettings, HttpTransport
from delivery.rollout_store import SqliteRolloutStore
from delivery.rollouts import Rollouts
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker

MTU = 1024 - 56  # the device's buffer less AJOUR_WRITE_OVERHEAD
ROLLOUT = "{waves: [{percent: 100, dwell: 1h}], confirmDeadline: 5m, stallDeadline: 5m}"


def fleet_yaml(names: list[str], rollout: str | None = None) -> str:
    spec = "{firmware: {container: {image: fw/app:latest}}" + (
        f", rollout: {rollout}}}" if rollout else "}"
    )
    docs = [f"kind: Application\nmetadata: {{name: app}}\nspec: {spec}\n"]
    docs += [
        f"metadata: {{name: {n}, application: app}}\n"
        f"spec: {{credentials: {{credentials: [{{pass: pw-{n}}}]}}}}\n"
        for n in names
    ]
    return "---\n".join(docs)


def build_firmware(out: Path) -> Path:
    """The bootloader with an ed25519 key, 1.0.0, 1.1.0 and 1.1.0 that never confirms."""
    return build_device_firmware(out, ("1.0.0", "1.1.0"), noconfirm=("1.1.0",))


def image(build: Path, version: str, app: str | None = None) -> bytes:
    return signed_image(build, version, app or f"app-device-{version}", key=build / "key.pem")


def publish(tmp: Path, version: str, content: bytes) -> None:
    """``content`` as ``version`` of ``fw/app``, tagged ``latest``, in ``tmp/oci``."""
    path = tmp / f"fw-{version}.bin"
    path.write_bytes(content)
    url = f"oci-layout://{tmp / 'oci' / 'fw' / 'app'}:latest"
    publisher_for(url, {}).publish(FirmwareArtifact(path, version))


@dataclass
class Served:
    worker: Worker
    http: HttpTransport
    tmp: Path

    @property
    def url(self) -> str:
        return self.http.url

    def uplink(self, name: str) -> HttpUplink:
        return HttpUplink(self.url, "app", name, f"pw-{name}", timeout=10.0)

    def publish(self, version: str, content: bytes) -> None:
        """A new version on the moving tag; the worker sees it at once (as after an event)."""
        publish(self.tmp, version, content)
        self.worker.targets.invalidate()
        time.sleep(0.6)  # past the rollouts' refresh interval


@contextmanager
def serving(
    tmp: Path, names: list[str], version: str, content: bytes | None, *, rollout: bool = False,
    port: int = 0,
) -> Iterator[Served]:  # fmt: skip
    """The worker serving ``version`` to ``names`` over HTTP on loopback until the end;
    ``content`` None: it is already published at ``oci-layout://tmp/oci/fw/app:latest``
    (by ``ajour-build build --publish``, say)."""
    (tmp / "fleet").mkdir(parents=True, exist_ok=True)
    (tmp / "fleet" / "f.yaml").write_text(fleet_yaml(names, ROLLOUT if rollout else None))
    if content is not None:
        publish(tmp, version, content)
    targets = Targets(load_fleet([tmp / "fleet"]), f"oci-layout://{tmp / 'oci'}", ttl=60)
    rollouts = Rollouts(SqliteRolloutStore(tmp / "rollouts.db")) if rollout else None
    worker = Worker(targets, StatusStore(), rollouts=rollouts)
    http = HttpTransport(
        worker, HttpSettings(port=port, status_token="status-t", events_token="events-t")
    )
    http.start()
    try:
        yield Served(worker, http, tmp)
    finally:
        http.stop()
