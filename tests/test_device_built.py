"""The QEMU device's firmware built by Ajour: ``ajour-build build examples/fleet --app
qemu-device`` runs the arm-gcc builder image (podman) on a git repository holding device/,
with the build's version and a signing key the test makes; the published 1.1.0 reaches a
device running 1.0.0 (built the same way) through the real worker and the gateway."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ajour_build.builders.catalog import load_catalog
from ajour_build.cli import main
from ajour_build.config import load_config
from ajour_build.core.fleet import load_fleet
from ajour_build.plan import plan_builds
from ajour_build.publish.destination import inspect
from ajour_build.runner.host import HostEngine
from ajour_build.runner.local_runner import LocalRunner
from ajour_build.runner.state_dir import StateDir
from ajour_devices.firmware import flash, make, make_key
from ajour_devices.qemu import QemuDevice
from ajour_devices.server import serving
from tests.conftest import EXAMPLES, REPO
from tests.firmware import ensure_builder_images, fake_builder, make_repo

EXAMPLE_URI = "https://git.example.com/acme/firmware.git"  # examples/fleet/qemu-device.yaml


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return ensure_builder_images(tmp_path_factory.mktemp("podman"), ("arm-gcc",))


@pytest.fixture
def firmware_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository holding device/, standing in for the example's git server: git's
    ``url.<repo>.insteadOf`` maps the example's URI to it, so examples/fleet is used as is."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "device", src / "device", ignore=shutil.ignore_patterns("build"))
    repo = tmp_path / "firmware.git"
    make_repo(repo, src)
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.file://{repo}.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", EXAMPLE_URI)
    return repo


def ajour_build(tmp_path: Path, key: Path, version: str, *extra: str) -> dict[str, Any]:
    args = ["build", str(EXAMPLES / "fleet"), "--app", "qemu-device", "--version", version]
    args += ["--image-key", str(key), "--builders", str(REPO / "builder-images")]
    args += ["--state-dir", str(tmp_path / "state"), *extra, "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert isinstance(record, dict)
    return record


def built(tmp_path: Path, record: dict[str, Any], name: str = "app-device.img") -> Path:
    return tmp_path / "state" / "builds" / str(record["id"]) / "artifacts" / name


def header_version(image: bytes) -> tuple[int, int, int, int]:
    """MCUboot's ``ih_ver`` (major, minor, revision, build) at offset 20 of the header."""
    assert image[:4] == struct.pack("<I", 0x96F3B83D), "not an MCUboot image"
    major, minor, revision, build = struct.unpack_from("<BBHI", image, 20)
    return major, minor, revision, build


def test_the_example_fleet_builds_the_device_firmware_that_updates_a_qemu_device(
    tmp_path: Path, images: dict[str, str], firmware_repo: Path
) -> None:
    key = tmp_path / "key.pem"  # made here, never committed
    boot = tmp_path / "boot"
    boot.mkdir()
    make(boot, "all", f"BOOT_PUBKEY={make_key(key)}")  # the bootloader holds its public key

    old = ajour_build(tmp_path, key, "1.0.0")
    target = f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest"
    new = ajour_build(tmp_path, key, "1.1.0", "--publish", "--to", target)
    assert new["builder"]["image"] == images["arm-gcc"] and new["builder"]["runner"] == "container"
    assert (old["version"], new["version"], new["cached"]) == ("1.0.0", "1.1.0", False)
    assert built(tmp_path, new, "app-device.elf").is_file()  # kept beside, published as ELF
    old_image, new_image = built(tmp_path, old).read_bytes(), built(tmp_path, new).read_bytes()
    assert header_version(old_image) == (1, 0, 0, 0) and header_version(new_image) == (1, 1, 0, 0)
    info = inspect(target, {})
    assert info.version == "1.1.0" and info.checksum == "sha256:" + new["artifact"]["sha256"]

    log = (tmp_path / "state" / "builds" / new["id"] / "build.log").read_text()
    assert "ajour-builder: running: make -C boot device-image" in log
    assert "device-image: 1.1.0, signed (ED25519)" in log
    assert "signing key: AJOUR_IMAGE_KEY_FILE (sha256 " in log
    pem = key.read_text()
    body = "".join(pem.splitlines()[1:-1])
    assert body not in log and pem.splitlines()[1] not in log, "the key is in the build log"

    with serving(tmp_path, ["dev0"], "1.1.0", None) as served:  # what ajour-build published
        device = QemuDevice("dev0", tmp_path / "dev0", boot / "boot.elf", served.uplink("dev0"))
        (device.folder / "flash.bin").write_bytes(flash(old_image))
        try:
            run = device.power_on()
            assert run.wait(60) == 0, run.lines()
        finally:
            device.stop()
        lines = run.lines()
        assert lines[0].startswith("boot: slot A 1.0.0+0 ")
        assert lines[0].endswith("SHA-256 and ED25519 ok)")
        assert lines[1:3] == ["app 1.0.0", "app: swap, reset"]
        assert lines[3] == "boot: slot B 1.1.0+0 swapped in, on trial"
        assert lines[5:] == ["app 1.1.0", "app: confirmed", "app: synced 1.1.0"]
        row = served.worker.store.get("app", "dev0") if served.worker.store else None
        assert row is not None and (row.state, row.current) == ("Synced", "1.1.0")


def test_the_signing_key_is_part_of_the_cache_key_and_a_bad_version_is_explained(
    tmp_path: Path, images: dict[str, str], firmware_repo: Path
) -> None:
    key, other = tmp_path / "key.pem", tmp_path / "other.pem"
    make_key(key)
    make_key(other)
    first = ajour_build(tmp_path, key, "2.0.0")
    assert ajour_build(tmp_path, key, "2.0.0")["cached"] is True
    resigned = ajour_build(tmp_path, other, "2.0.0")
    assert resigned["cached"] is False, "an image signed with another key was reused"
    assert resigned["artifact"]["sha256"] != first["artifact"]["sha256"]

    args = ["build", str(EXAMPLES / "fleet"), "--app", "qemu-device", "--version", "2.0"]
    args += ["--image-key", str(key), "--builders", str(REPO / "builder-images")]
    result = CliRunner().invoke(main, [*args, "--state-dir", str(tmp_path / "state")])
    assert result.exit_code != 0
    assert (
        "device-image: the version must be N.N.N or N.N.N+N for the MCUboot header, got '2.0'"
        in result.output
    ), result.output


def test_host_mode_gets_the_key_file_too_and_it_goes_with_the_workspace(tmp_path: Path) -> None:
    """``--runner host``: AJOUR_IMAGE_KEY_FILE is an absolute path on the host, the copy is
    readable by its owner only, and nothing of it stays once the build is done."""
    repo = tmp_path / "repo"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "README").write_text("firmware\n")
    make_repo(repo, tmp_path / "src")
    catalog = tmp_path / "catalog"
    script = """\
        case $AJOUR_IMAGE_KEY_FILE in /*) ;; *) echo "not absolute" >&2; exit 9 ;; esac
        mkdir -p out
        key=$AJOUR_IMAGE_KEY_FILE
        { sha256sum < "$key"; stat -c %a "$key"; } > out/fw.bin
        """
    fake_builder(catalog, "signer", script)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "app.yaml").write_text(
        "kind: Application\nmetadata: {name: fw}\nspec: {firmware: {container: {image: fw:1,"
        f" build: {{image: signer, source: {{git: {{uri: 'file://{repo}', rev: main}}}},"
        " artifact: {path: out/fw.bin}}}}}\n"
    )
    env = {"AJOUR_ALLOWED_APPLICATIONS": '["fw"]', "AJOUR_SOURCES__ALLOW_LOCAL": "true"}
    (planned,) = plan_builds(load_fleet([tmp_path / "fleet"]), load_config(None, env=env)).builds
    secret = b"-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n"
    state = StateDir(tmp_path / "state")
    local = LocalRunner(state, HostEngine(), load_catalog(catalog), signing_key=secret)
    record = local.run(planned, version="1.0.0")
    out = (state.build_dir(record.id) / "artifacts" / "fw.bin").read_text().split()
    assert out == [hashlib.sha256(secret).hexdigest(), "-", "400"]
    leftovers = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert all(b"not-a-real-key" not in p.read_bytes() for p in leftovers)


def test_build_takes_the_image_key_from_the_config_as_the_service_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ajour-build build`` without ``--image-key``: ``signing.image_key`` of the config
    reaches the builder (``AJOUR_IMAGE_KEY_FILE`` wins over it); a key file that cannot be
    read stops the build before it starts, naming the setting."""
    repo = tmp_path / "repo"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "README").write_text("firmware\n")
    make_repo(repo, tmp_path / "src")
    catalog = tmp_path / "catalog"
    fake_builder(
        catalog, "signer", 'mkdir -p out\nsha256sum < "$AJOUR_IMAGE_KEY_FILE" > out/fw.bin\n'
    )
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "app.yaml").write_text(
        "kind: Application\nmetadata: {name: fw}\nspec: {firmware: {container: {image: fw:1,"
        f" build: {{image: signer, source: {{git: {{uri: 'file://{repo}', rev: main}}}},"
        " artifact: {path: out/fw.bin}}}}}\n"
    )
    from_config, from_env = tmp_path / "config.key", tmp_path / "env.key"
    from_config.write_bytes(b"config key\n")
    from_env.write_bytes(b"env key\n")
    config = tmp_path / "ajour.yaml"
    config.write_text(f"signing: {{image_key: '{from_config}'}}\n")
    monkeypatch.setenv("AJOUR_ALLOWED_APPLICATIONS", '["fw"]')
    monkeypatch.setenv("AJOUR_SOURCES__ALLOW_LOCAL", "true")
    monkeypatch.delenv("AJOUR_IMAGE_KEY_FILE", raising=False)

    def build(state: str) -> Any:
        args = ["build", str(tmp_path / "fleet"), "--config", str(config), "--app", "fw"]
        args += ["--runner", "host", "--builders", str(catalog), "--version", "1.0.0"]
        return CliRunner().invoke(main, [*args, "--state-dir", str(tmp_path / state), "--json"])

    def built_with(result: Any, state: str) -> str:
        assert result.exit_code == 0, result.output
        (record,) = json.loads(result.stdout)
        path: Path = tmp_path / state / "builds" / record["id"] / "artifacts" / "fw.bin"
        return path.read_text().split()[0]

    assert built_with(build("s1"), "s1") == hashlib.sha256(b"config key\n").hexdigest()
    monkeypatch.setenv("AJOUR_IMAGE_KEY_FILE", str(from_env))
    assert built_with(build("s2"), "s2") == hashlib.sha256(b"env key\n").hexdigest()
    monkeypatch.delenv("AJOUR_IMAGE_KEY_FILE")
    from_config.unlink()
    failed = build("s3")
    assert failed.exit_code == 1
    assert f"image key {from_config} (set by signing.image_key in {config})" in failed.output
    assert "cannot read it" in failed.output
    assert not (tmp_path / "s3" / "builds").exists()
