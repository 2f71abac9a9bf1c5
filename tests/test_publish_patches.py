"""Patch layers at publish (ajour_build/publish/patches.py), to a real registry and a layout:
from the last N versions, annotated, skipped when too large, read back by the sources."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from ajour_build.core.artifact.format import PATCH_MEDIA_TYPE, TITLE, sha256_digest
from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.patches import (
    FROM_CHECKSUM,
    FROM_VERSION,
    PATCH_FORMAT,
    TO_CHECKSUM,
    patch_layers,
)
from ajour_build.core.artifact.reference import OciRef, parse_layout, parse_oci
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.errors import PublishError
from ajour_build.publish.destination import publisher_for
from ajour_build.publish.publisher import FirmwareArtifact
from delivery.delta import apply_patch
from delivery.sources.layout import LayoutSource
from delivery.sources.oci import OciSource
from tests.registry import run_registry

BASE = bytes(range(256)) * 32  # 8 KiB


def image(n: int) -> bytes:
    """Version n: the base with one small change per version."""
    return BASE[: 1000 * n] + f"v{n}".encode() + BASE[1000 * n + 2 :]


def publish(tmp: Path, url: str, version: str, content: bytes, patches: str = "") -> None:
    path = tmp / f"blinky-{version}.bin"
    path.write_bytes(content)
    env = {"AJOUR_PUBLISH_PATCHES": patches} if patches else {}
    publisher_for(url, env).publish(FirmwareArtifact(path, version))


def layers(manifest: bytes) -> list[dict[str, object]]:
    found: list[dict[str, object]] = json.loads(manifest)["layers"]
    return found


def check_layout(tmp: Path) -> None:
    url = f"oci-layout://{tmp}/layout:latest"
    store = LayoutStore(parse_layout(url).path)
    publish(tmp, url, "1.0.0", image(1))
    assert [x["mediaType"] for x in layers(store.manifest("1.0.0")[0])] == [
        "application/octet-stream"
    ]
    publish(tmp, url, "1.1.0", image(2))
    publish(tmp, url, "1.2.0", image(3))
    info = store.inspect("1.2.0")
    usable, skipped = patch_layers(info)
    assert skipped == []
    assert [p.from_version for p in usable] == ["1.1.0", "1.0.0"]  # newest first
    for patch, n in zip(usable, (2, 1), strict=True):
        data = store.read_blob(patch.descriptor.digest)
        assert apply_patch(image(n), data) == image(3)
        assert len(data) * 20 < len(image(3))
        assert patch.descriptor.annotations == {
            FROM_VERSION: f"1.{n - 1}.0",
            FROM_CHECKSUM: sha256_digest(image(n)),
            TO_CHECKSUM: sha256_digest(image(3)),
            PATCH_FORMAT: "detools-sequential-crle",
            TITLE: f"blinky-1.2.0-1.{n - 1}.0-to-1.2.0.patch",
        }
    # the delivery source reads them into the target
    target = LayoutSource(store, "latest").target()
    assert target.version == b"1.2.0" and target.data == image(3)
    assert {p.from_version: p.data for p in target.patches} == {
        b"1.1.0": store.read_blob(usable[0].descriptor.digest),
        b"1.0.0": store.read_blob(usable[1].descriptor.digest),
    }
    assert target.patches[0].from_checksum == hashlib.sha256(image(2)).digest()


def test_layout_publish_adds_patches_from_earlier_versions(tmp_path: Path) -> None:
    check_layout(tmp_path)


def test_registry_publish_adds_patches_from_earlier_versions(tmp_path: Path) -> None:
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/fw/blinky:latest"
        publish(tmp_path, url, "1.0.0", image(1))
        publish(tmp_path, url, "1.1.0", image(2))
        publish(tmp_path, url, "1.2.0", image(3), patches="1")  # only the latest one
        reader = RegistryReader(registry.host)
        ref = parse_oci(url)
        info = reader.inspect(OciRef(ref.host, ref.repository, "1.2.0"))
        usable, _ = patch_layers(info)
        assert [p.from_version for p in usable] == ["1.1.0"]
        data = reader.blob(ref.repository, usable[0].descriptor)
        assert apply_patch(image(2), data) == image(3)
        target = OciSource(reader, ref).target()
        assert target.version == b"1.2.0" and len(target.patches) == 1
        assert target.patches[0].data == data
        assert OciSource(reader, ref).target() is not target  # a new source reads again
        source = OciSource(reader, ref)
        assert source.target() is source.target()  # one object per manifest (reply memo)
        # publishing the same version again changes nothing
        before = reader.resolve(OciRef(ref.host, ref.repository, "1.2.0"))
        publish(tmp_path, url, "1.2.0", image(3))
        assert reader.resolve(OciRef(ref.host, ref.repository, "1.2.0")) == before


def test_a_patch_not_twice_smaller_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"oci-layout://{tmp_path}/layout:latest"
    publish(tmp_path, url, "1.0.0", image(1))
    unrelated = hashlib.sha256(b"seed").digest() * 256
    with caplog.at_level(logging.INFO, logger="ajour_build.publish.patches"):
        publish(tmp_path, url, "2.0.0", unrelated)
    store = LayoutStore(tmp_path / "layout")
    assert [x["mediaType"] for x in layers(store.manifest("2.0.0")[0])] == [
        "application/octet-stream"
    ]
    assert "no patch from 1.0.0 to 2.0.0: it is" in caplog.text
    assert "not at least 2x smaller than the 8192-byte image" in caplog.text


def test_moving_tags_are_not_patched_from_and_a_rebuild_gets_a_tiny_patch(tmp_path: Path) -> None:
    url = f"oci-layout://{tmp_path}/layout:stable"
    publish(tmp_path, url, "1.0.0", image(1))
    publish(tmp_path, url, "1.0.1", image(1))  # a rebuild with the same bytes
    publish(tmp_path, url, "1.1.0", image(2))
    store = LayoutStore(tmp_path / "layout")
    assert store.tags() == ["1.0.0", "1.0.1", "1.1.0", "stable"]
    usable = patch_layers(store.inspect("1.1.0"))[0]
    assert [p.from_version for p in usable] == ["1.0.1", "1.0.0"]  # not "stable"
    (same,) = patch_layers(store.inspect("1.0.1"))[0]
    assert same.descriptor.size < 32
    assert PATCH_MEDIA_TYPE == "application/vnd.ajour.firmware.patch.v1+detools"


def test_patches_off(tmp_path: Path) -> None:
    url = f"oci-layout://{tmp_path}/layout:latest"
    publish(tmp_path, url, "1.0.0", image(1))
    publish(tmp_path, url, "1.1.0", image(2), patches="0")
    assert len(layers(LayoutStore(tmp_path / "layout").manifest("1.1.0")[0])) == 1


@pytest.mark.parametrize("value", ["-1", "17", "three"])
def test_a_bad_patch_count_is_a_precise_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(PublishError, match=r"AJOUR_PUBLISH_PATCHES=.*0 \(no patches\) to 16"):
        publisher_for(f"oci-layout://{tmp_path}/l:latest", {"AJOUR_PUBLISH_PATCHES": value})
