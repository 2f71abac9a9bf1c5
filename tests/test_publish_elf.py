"""The build's ELF goes out with the firmware, as a second layer of the OCI artifact
(``application/vnd.ajour.firmware.elf.v1``), so crashes can be symbolicated later; delivery
keeps serving only the firmware layer, whatever the layers' order.

Real builds (host-mode builder), the real docker-registry, oras-py's pull, delivery's
real sources.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import git
import oras.provider
import pytest
from click.testing import CliRunner

from ajour_build.cli import main
from ajour_build.core.artifact.format import (
    CONFIG_MEDIA_TYPE,
    ELF_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    TITLE,
    FirmwareConfig,
    canonical,
    config_blob,
    sha256_digest,
)
from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.layout_writer import layout_writer
from ajour_build.core.artifact.reference import parse_oci
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.publish.destination import inspect, publisher_for
from ajour_build.publish.publisher import FirmwareArtifact
from delivery.cache import TtlCache
from delivery.sources.layout import LayoutSource
from delivery.sources.oci import OciSource
from tests.firmware import built_app, fake_builder
from tests.registry import Registry, run_registry

FIRMWARE = b"\x00\x10\x00\x20 firmware image"
ELF = b"\x7fELF debug symbols " * 64


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with run_registry(tmp_path / "registry") as reg:
        yield reg


def files(tmp_path: Path) -> tuple[Path, Path]:
    fw, elf = tmp_path / "fw.bin", tmp_path / "fw.elf"
    fw.write_bytes(FIRMWARE)
    elf.write_bytes(ELF)
    return fw, elf


def layers(manifest: bytes) -> list[tuple[str, str]]:
    return [(m["mediaType"], m["annotations"][TITLE]) for m in json.loads(manifest)["layers"]]


def test_a_build_publishes_the_elf_it_left_next_to_the_firmware(
    runner: CliRunner, tmp_path: Path
) -> None:
    repo = git.Repo.init(tmp_path / "src", initial_branch="main")
    (tmp_path / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    repo.index.add(["main.c"])
    repo.index.commit("fw", author=git.Actor("x", "x@ajour.invalid"))
    repo.close()
    fake_builder(
        tmp_path / "catalog",
        "elfy",
        "mkdir -p build\nprintf 'firmware' > build/fw.bin\nprintf 'ELF symbols' > build/fw.elf\n",
    )
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "fw.yaml").write_text(
        built_app("fw", f"file://{tmp_path / 'src'}", builder="elfy", artifact="build/fw.bin")
    )
    (fleet / "ajour.yaml").write_text("allowed_applications: [fw]\nsources: {allow_local: true}\n")
    layout = tmp_path / "layout"
    args = ["build", str(fleet), "--app", "fw", "--runner", "host", "--version", "1.0"]
    args += ["--builders", str(tmp_path / "catalog"), "--state-dir", str(tmp_path / "state")]
    result = runner.invoke(main, [*args, "--publish", "--to", f"oci-layout://{layout}:latest"])
    assert result.exit_code == 0, result.output
    store = LayoutStore(layout)
    manifest, _ = store.manifest("latest")
    assert layers(manifest) == [(LAYER_MEDIA_TYPE, "fw.bin"), (ELF_MEDIA_TYPE, "fw.elf")]
    info = store.inspect("latest")
    assert info.elf is not None and store.read_blob(info.elf.digest) == b"ELF symbols"
    assert store.firmware(info) == b"firmware"  # what delivery serves
    shown = runner.invoke(main, ["inspect", f"oci-layout://{layout}:latest"])
    assert "fw.elf (sha256:" in shown.output


def test_publish_takes_the_elf_beside_the_firmware_and_oras_pulls_both(
    registry: Registry, tmp_path: Path, runner: CliRunner
) -> None:
    fw, _ = files(tmp_path)
    url = f"oci://{registry.host}/fw/app:latest"
    result = runner.invoke(main, ["publish", str(fw), "--to", url, "--version", "2.0"])
    assert result.exit_code == 0, result.output
    reader = RegistryReader(registry.host)
    manifest, _ = reader.manifest(parse_oci(url))
    assert layers(manifest) == [(LAYER_MEDIA_TYPE, "fw.bin"), (ELF_MEDIA_TYPE, "fw.elf")]
    pulled = tmp_path / "pulled"
    client = oras.provider.Registry(hostname=registry.host, insecure=True)
    client.pull(target=f"{registry.host}/fw/app:2.0", outdir=str(pulled))
    assert (pulled / "fw.bin").read_bytes() == FIRMWARE
    assert (pulled / "fw.elf").read_bytes() == ELF
    source = OciSource(reader, parse_oci(url), TtlCache(30))
    target = source.target()
    assert (target.version, target.data) == (b"2.0", FIRMWARE)


def test_without_an_elf_the_artifact_has_one_layer(tmp_path: Path) -> None:
    fw = tmp_path / "fw.bin"
    fw.write_bytes(FIRMWARE)
    publisher_for(f"oci-layout://{tmp_path / 'layout'}:latest", {}).publish(
        FirmwareArtifact(fw, "1.0")
    )
    manifest, _ = LayoutStore(tmp_path / "layout").manifest("latest")
    assert layers(manifest) == [(LAYER_MEDIA_TYPE, "fw.bin")]
    assert inspect(f"oci-layout://{tmp_path / 'layout'}:latest", {}).elf is None


def _elf_first_manifest(put: dict[str, bytes]) -> bytes:
    """A v1 manifest whose ELF layer comes before the firmware layer; ``put`` collects the
    blobs to store, by digest."""
    config = FirmwareConfig(version="3.0", size=len(FIRMWARE), checksum=sha256_digest(FIRMWARE))
    config_bytes = config_blob(config)
    for blob in (config_bytes, FIRMWARE, ELF):
        put[sha256_digest(blob)] = blob

    def desc(media: str, data: bytes, title: str) -> dict[str, object]:
        digest, size = sha256_digest(data), len(data)
        return {"mediaType": media, "digest": digest, "size": size, "annotations": {TITLE: title}}

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.ajour.firmware.v1",
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [desc(ELF_MEDIA_TYPE, ELF, "fw.elf"), desc(LAYER_MEDIA_TYPE, FIRMWARE, "fw.bin")],
    }
    return canonical(manifest)


def test_delivery_serves_the_firmware_layer_when_the_elf_comes_first(
    registry: Registry, tmp_path: Path
) -> None:
    blobs: dict[str, bytes] = {}
    manifest = _elf_first_manifest(blobs)
    with layout_writer(tmp_path / "layout") as writer:
        for blob in blobs.values():
            writer.put_bytes(blob)
        writer.tag("latest", writer.put_bytes(manifest), len(manifest))
    served = LayoutSource(LayoutStore(tmp_path / "layout"), "latest").target()
    assert (served.version, served.data) == (b"3.0", FIRMWARE)
    assert served.checksum == bytes.fromhex(sha256_digest(FIRMWARE).removeprefix("sha256:"))
    # the same artifact in a registry, pushed by oras-py as it is
    client = oras.provider.Registry(hostname=registry.host, insecure=True)
    container = client.get_container(f"{registry.host}/fw/elf-first:latest")
    for digest, blob in blobs.items():
        path = tmp_path / digest.replace(":", "-")
        path.write_bytes(blob)
        layer = {"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": len(blob)}
        assert client.upload_blob(str(path), container, layer).status_code in (201, 202)
    put = client.do_request(
        f"http://{container.manifest_url()}",
        "PUT",
        data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert put.status_code == 201, put.text
    reader = RegistryReader(registry.host)
    ref = parse_oci(f"oci://{registry.host}/fw/elf-first:latest")
    target = OciSource(reader, ref, TtlCache(30)).target()
    assert (target.version, target.data) == (b"3.0", FIRMWARE)
    assert reader.firmware(ref, reader.inspect(ref)) == FIRMWARE
