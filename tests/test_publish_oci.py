"""Publishing to a real registry (docker-registry), a layout dir and a plain dir; reading back."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ajour_build.core.artifact.format import sha256_digest
from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.reference import parse_oci
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.errors import ArtifactError, PublishError
from ajour_build.publish.destination import inspect, publisher_for
from ajour_build.publish.publisher import FirmwareArtifact, SourceInfo
from tests.registry import Registry, htpasswd_file, run_registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with run_registry(tmp_path / "registry") as reg:
        yield reg


def firmware(tmp_path: Path, content: bytes, name: str = "fw.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_publish_pull_and_move_latest(registry: Registry, tmp_path: Path) -> None:
    url = f"oci://{registry.host}/fw/blinky:latest"
    one = firmware(tmp_path, b"\x01" * 1000, "one.bin")
    two = firmware(tmp_path, b"\x02" * 2000, "two.bin")
    first = publisher_for(url, {}).publish(
        FirmwareArtifact(one, "1.0.0", SourceInfo("https://git.example.com/fw", "abc123", "."))
    )
    assert first.tags == ("1.0.0", "latest")
    reader = RegistryReader(registry.host)
    assert reader.tags("fw/blinky") == ["1.0.0", "latest"]
    info = inspect(url, {})
    assert (info.version, info.size, info.layout) == ("1.0.0", 1000, "v1")
    assert info.checksum == sha256_digest(b"\x01" * 1000)
    assert info.manifest_digest == first.digest
    assert info.source.commit == "abc123" and info.title == "one.bin"
    assert reader.firmware(parse_oci(url), info) == b"\x01" * 1000
    manifest = json.loads(reader.manifest(parse_oci(url))[0])
    assert manifest["artifactType"] == "application/vnd.ajour.firmware.v1"
    assert manifest["layers"][0]["annotations"]["org.opencontainers.image.title"] == "one.bin"
    assert manifest["annotations"]["org.opencontainers.image.version"] == "1.0.0"

    second = publisher_for(url, {}).publish(FirmwareArtifact(two, "1.1.0"))
    assert inspect(url, {}).version == "1.1.0", "latest moved"
    assert inspect(f"oci://{registry.host}/fw/blinky:1.0.0", {}).version == "1.0.0"
    assert reader.resolve(parse_oci(url)) == second.digest

    def pushed() -> set[str]:  # the tags pushed to fw/blinky the registry told us of
        events = registry.events.pushes()
        return {e["target"].get("tag") for e in events if e["target"]["repository"] == "fw/blinky"}

    # (any two pushes were not enough: blob pushes, and earlier tests', are pushes too)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not {"1.0.0", "1.1.0", "latest"} <= pushed():
        time.sleep(0.1)
    assert {"1.0.0", "1.1.0", "latest"} <= pushed(), "the registry's notifications reached us"


def test_republishing_is_idempotent_and_versions_are_immutable(
    registry: Registry, tmp_path: Path
) -> None:
    url = f"oci://{registry.host}/fw/app:stable"
    art = firmware(tmp_path, b"firmware-A")
    one = publisher_for(url, {}).publish(FirmwareArtifact(art, "2.0"))
    again = publisher_for(url, {}).publish(FirmwareArtifact(art, "2.0"))
    assert again.digest == one.digest
    other = firmware(tmp_path, b"firmware-B", "b.bin")
    with pytest.raises(
        PublishError, match=r"version 2\.0 is already published .* bump the version"
    ):
        publisher_for(url, {}).publish(FirmwareArtifact(other, "2.0"))
    assert inspect(url, {}).checksum == sha256_digest(b"firmware-A"), "stable did not move"


def test_registry_down(tmp_path: Path) -> None:
    from tests.registry import free_port

    art = firmware(tmp_path, b"x")
    with pytest.raises(PublishError, match=r"registry 127\.0\.0\.1:\d+ is unreachable"):
        publisher_for(f"oci://127.0.0.1:{free_port()}/fw/x:latest", {}).publish(
            FirmwareArtifact(art, "1.0")
        )


@pytest.mark.parametrize(
    ("content", "version", "expected"),
    [(None, "1.0", "does not exist"), (b"", "1.0", "is empty"), (b"x", "1.0 beta", "no spaces")],
    ids=["missing", "empty", "version-with-space"],
)
def test_bad_artifacts_send_nothing(
    registry: Registry, tmp_path: Path, content: bytes | None, version: str, expected: str
) -> None:
    path = tmp_path / "fw.bin"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PublishError, match=expected):
        publisher_for(f"oci://{registry.host}/fw/x:latest", {}).publish(
            FirmwareArtifact(path, version)
        )
    assert not registry.events.received


def test_basic_auth_and_docker_config(tmp_path: Path) -> None:
    secret = "s3cr3t-pw"
    htpasswd = htpasswd_file(tmp_path / "htpasswd", "ci", secret)
    with run_registry(tmp_path / "registry", htpasswd) as reg:
        url = f"oci://{reg.host}/fw/x:latest"
        art = firmware(tmp_path, b"auth")
        with pytest.raises(PublishError, match=r"denied .*HTTP 401.*AJOUR_REGISTRY_USERNAME"):
            publisher_for(url, {}).publish(FirmwareArtifact(art, "1"))
        with pytest.raises(PublishError) as wrong:
            publisher_for(
                url, {"AJOUR_REGISTRY_USERNAME": "ci", "AJOUR_REGISTRY_PASSWORD": "nope"}
            ).publish(FirmwareArtifact(art, "1"))
        assert "AJOUR_REGISTRY_USERNAME were refused" in str(wrong.value)
        assert "nope" not in str(wrong.value)
        env = {"AJOUR_REGISTRY_USERNAME": "ci", "AJOUR_REGISTRY_PASSWORD": secret}
        publisher_for(url, env).publish(FirmwareArtifact(art, "1"))
        config = tmp_path / "docker"
        config.mkdir()
        token = base64.b64encode(f"ci:{secret}".encode()).decode()
        (config / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
        assert inspect(url, {"DOCKER_CONFIG": str(config)}).version == "1"
        with pytest.raises(ArtifactError) as anon:
            inspect(url, {})
        assert "HTTP 401" in str(anon.value) and secret not in str(anon.value)


def _put(host: str, repo: str, data: bytes) -> str:
    digest = sha256_digest(data)
    req = urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(req) as resp:
        location = resp.headers["Location"]
    sep = "&" if "?" in location else "?"
    put = urllib.request.Request(
        f"{location}{sep}digest={digest}",
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    if not location.startswith("http"):
        put.full_url = f"http://{host}{location}{sep}digest={digest}"
    with urllib.request.urlopen(put) as resp:
        resp.read()
    return digest


def _manifest(host: str, repo: str, tag: str, manifest: dict[str, object]) -> None:
    body = json.dumps(manifest).encode()
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}",
        data=body,
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(req) as resp:
        resp.read()


def _desc(media: str, data: bytes, digest: str) -> dict[str, object]:
    return {"mediaType": media, "digest": digest, "size": len(data)}


def test_reads_drogue_octet_layout(registry: Registry) -> None:
    fw = b"drogue-octet-firmware"
    config = b"{}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _desc(
            "application/vnd.oci.image.config.v1+json",
            config,
            _put(registry.host, "old/fw", config),
        ),
        "layers": [_desc("application/octet-stream", fw, _put(registry.host, "old/fw", fw))],
    }
    _manifest(registry.host, "old/fw", "0.9.3", manifest)
    url = f"oci://{registry.host}/old/fw:0.9.3"
    info = inspect(url, {})
    assert (info.layout, info.version, info.size) == ("drogue-octet", "0.9.3", len(fw))
    assert RegistryReader(registry.host).firmware(parse_oci(url), info) == fw


def _scratch_layer(fw: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        member = tarfile.TarInfo("firmware")
        member.size = len(fw)
        tar.addfile(member, io.BytesIO(fw))
    return gzip.compress(raw.getvalue())


def test_reads_drogue_scratch_image_with_label(registry: Registry) -> None:
    fw = b"scratch-firmware-bytes"
    label = json.dumps(
        {"version": "0.5.0", "size": len(fw), "checksum": sha256_digest(fw).removeprefix("sha256:")}
    )
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"io.drogue.metadata": label}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    layer = _scratch_layer(fw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _desc(
            "application/vnd.oci.image.config.v1+json",
            config,
            _put(registry.host, "old/img", config),
        ),
        "layers": [
            _desc(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                layer,
                _put(registry.host, "old/img", layer),
            )
        ],
    }
    _manifest(registry.host, "old/img", "latest", manifest)
    url = f"oci://{registry.host}/old/img:latest"
    info = inspect(url, {})
    assert (info.layout, info.version, info.size) == ("drogue-scratch", "0.5.0", len(fw))
    assert RegistryReader(registry.host).firmware(parse_oci(url), info) == fw


def test_manifest_without_firmware_is_refused(registry: Registry) -> None:
    config = b'{"config": {}}'
    layer = _scratch_layer(b"not-firmware")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _desc(
            "application/vnd.example.config+json", config, _put(registry.host, "junk/x", config)
        ),
        "layers": [
            _desc("application/vnd.example.layer", layer, _put(registry.host, "junk/x", layer))
        ],
    }
    _manifest(registry.host, "junk/x", "1", manifest)
    with pytest.raises(ArtifactError, match="the manifest has no firmware"):
        inspect(f"oci://{registry.host}/junk/x:1", {})


def test_corrupted_blob_is_detected_on_read(registry: Registry, tmp_path: Path) -> None:
    url = f"oci://{registry.host}/fw/c:latest"
    content = b"\x55" * 4096
    publisher_for(url, {}).publish(FirmwareArtifact(firmware(tmp_path, content), "3.0"))
    blob = registry.blob_file(content)
    blob.write_bytes(b"\x66" + content[1:])
    info = inspect(url, {})
    with pytest.raises(ArtifactError, match="is corrupted: expected digest sha256:"):
        RegistryReader(registry.host).firmware(parse_oci(url), info)


def test_layout_dir_publish_inspect_and_corruption(tmp_path: Path) -> None:
    url = f"oci-layout://{tmp_path / 'layout'}:latest"
    publisher_for(url, {}).publish(FirmwareArtifact(firmware(tmp_path, b"L1"), "1.0"))
    publisher_for(url, {}).publish(FirmwareArtifact(firmware(tmp_path, b"L2", "b.bin"), "1.1"))
    store = LayoutStore(tmp_path / "layout")
    assert store.tags() == ["1.0", "1.1", "latest"]
    info = inspect(url, {})
    assert info.version == "1.1" and store.firmware(info) == b"L2"
    hexdigest = sha256_digest(b"L2").removeprefix("sha256:")
    (tmp_path / "layout" / "blobs" / "sha256" / hexdigest).write_bytes(b"L3")
    with pytest.raises(ArtifactError, match="corrupted"):
        store.firmware(info)


def test_dir_publish_writes_drogue_file_layout(tmp_path: Path) -> None:
    url = f"dir://{tmp_path / 'files' / 'sensor'}"
    publisher_for(url, {}).publish(FirmwareArtifact(firmware(tmp_path, b"D1"), "0.10"))
    meta = json.loads((tmp_path / "files" / "sensor.json").read_text())
    assert meta == {
        "version": "0.10",
        "checksum": sha256_digest(b"D1").removeprefix("sha256:"),
        "size": 2,
    }
    assert (tmp_path / "files" / "sensor.bin").read_bytes() == b"D1"
    assert inspect(url, {}).version == "0.10"
