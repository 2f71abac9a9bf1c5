"""A delivery worker whose fleet and OCI layout the MQTT tests share."""

from __future__ import annotations

from pathlib import Path

from ajour_build.core.fleet import load_fleet
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.test_delivery_http import fleet_yaml
from tests.test_sources import publish


def layout_worker(tmp: Path, image: bytes = b"m" * 8192, version: str = "4.0") -> Worker:
    (tmp / "fleet").mkdir(exist_ok=True)
    (tmp / "fleet" / "f.yaml").write_text(fleet_yaml())
    publish(tmp, f"oci-layout://{tmp / 'oci' / 'fw' / 'app'}:latest", version, image)
    return Worker(
        Targets(load_fleet([tmp / "fleet"]), f"oci-layout://{tmp / 'oci'}"), StatusStore()
    )
