"""Delivery resolves each device's target from the fleet: Device overrides Application."""

from __future__ import annotations

from pathlib import Path

import pytest

from ajour_build.core.fleet import load_fleet
from delivery.errors import DeliveryError
from delivery.targets import Targets
from tests.registry import run_registry
from tests.test_sources import publish

FLEET = """\
kind: Application
metadata: {name: app}
spec: {firmware: {container: {image: fw/app:latest}}}
---
metadata: {name: d1, application: app}
---
metadata: {name: d2, application: app}
---
metadata: {name: canary, application: app}
spec: {firmware: {container: {image: "fw/app:canary"}}}
---
metadata: {name: bench, application: app}
spec: {firmware: {file: {name: bench-fw}}}
---
metadata: {name: legacy, application: app}
spec: {firmware: {hawkbit: {controller: c1}}}
"""


def fleet(tmp_path: Path) -> Path:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    return tmp_path / "fleet"


def test_registry_targets_per_device(tmp_path: Path) -> None:
    with run_registry(tmp_path / "registry") as registry:
        publish(tmp_path, f"oci://{registry.host}/ajour/fw/app:latest", "1.0", b"x" * 100)
        publish(tmp_path, f"oci://{registry.host}/ajour/fw/app:canary", "1.1-rc1", b"y" * 100)
        targets = Targets(load_fleet([fleet(tmp_path)]), f"{registry.host}/ajour")
        d1, d2 = targets.source("app", "d1"), targets.source("app", "d2")
        assert d1 is d2, "devices with the same spec share one source"
        assert d1 is not None and d1.target().version == b"1.0"
        canary = targets.source("app", "canary")
        assert canary is not None and canary.target().version == b"1.1-rc1"
        publish(tmp_path, f"oci://{registry.host}/ajour/fw/app:latest", "1.2", b"z" * 100)
        assert d1.target().version == b"1.0"
        assert targets.invalidate(f"{registry.host}/ajour/fw/app", "latest") == 1
        assert d1.target().version == b"1.2" and canary.target().version == b"1.1-rc1"
        assert not targets.knows("app", "stranger") and targets.source("app", "nobody") is not None


def test_layout_and_file_targets(tmp_path: Path) -> None:
    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "3.0", b"L" * 9)
    publish(tmp_path, f"dir://{tmp_path / 'files' / 'bench-fw'}", "0.1", b"F" * 9)
    targets = Targets(
        load_fleet([fleet(tmp_path)]),
        f"oci-layout://{tmp_path / 'oci'}",
        file_dir=tmp_path / "files",
    )
    app_source = targets.source("app", "d1")
    bench_source = targets.source("app", "bench")
    assert app_source is not None and app_source.target().version == b"3.0"
    assert bench_source is not None and bench_source.target().data == b"F" * 9
    with pytest.raises(DeliveryError, match="--hawkbit-url"):
        targets.source("app", "legacy")
    with pytest.raises(DeliveryError, match="--file-dir"):
        Targets(load_fleet([tmp_path / "fleet"])).source("app", "bench")


def test_hawkbit_target_via_the_ddi_fake(tmp_path: Path) -> None:
    from delivery.targets import HawkbitSettings
    from tests.hawkbit_ddi_fake import HawkbitDdiFake

    with HawkbitDdiFake(controller_id="c1") as fake:
        fake.deploy("7.7", b"hawk" * 100)
        targets = Targets(
            load_fleet([fleet(tmp_path)]),
            hawkbit=HawkbitSettings(fake.base_url, fake.tenant, fake.gateway_token),
        )
        source = targets.source("app", "legacy")
        assert source is not None and source.target().version == b"7.7"
        assert fake.spec_violations == []
