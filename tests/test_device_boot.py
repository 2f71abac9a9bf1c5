"""The bootloader (device/boot/) on QEMU's mps2-an385: MCUboot images made by imgtool.

Each test is one power-on: a new QEMU process whose working directory holds the device's
``flash.bin`` (slot A, slot B, the state page), which the bootloader reads by semihosting.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ajour_devices.firmware import flash, make_key
from tests.conftest import REPO
from tests.firmware import QEMU

BOOT = REPO / "device" / "boot"
SLOT_SIZE = 0x40000
FLASH_SIZE = 2 * SLOT_SIZE + 0x1000
HEADER_SIZE = 0x200
IMGTOOL = [sys.executable, "-m", "imgtool.main"]
APPS = [("1.0.0", 1), ("1.1.0", 1), ("1.1.0", 0)]  # version, confirms itself


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("boot-build")
    apps = [["app", f"APP_VERSION={v}", f"APP_CONFIRM={c}"] for v, c in APPS]
    for goal in (["all"], *apps):
        subprocess.run(
            ["make", "-s", "-C", str(BOOT), f"BUILD={out}", *goal],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return out


def signed_image(
    build: Path, version: str, app: str = "app-1.0.0", key: Path | None = None
) -> bytes:
    """``app`` as imgtool writes an MCUboot image of it (header, image, SHA-256 TLV), signed
    with ``key`` (an ED25519 TLV) if given."""
    out = build / f"{app}-{version}-{key.stem if key else 'unsigned'}.img"
    args = ["create", "--version", version, "-H", hex(HEADER_SIZE), "--pad-header"]
    args += ["-k", str(key)] if key else []
    subprocess.run(
        [*IMGTOOL, *args, "-S", hex(SLOT_SIZE), str(build / f"{app}.bin"), str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    verify = subprocess.run(
        [*IMGTOOL, "verify", str(out)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Image was correctly validated" in verify.stdout, verify.stdout + verify.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def keyed(build: Path) -> tuple[Path, Path, Path]:
    """A bootloader built with an ED25519 key (its dir), that key and another one."""
    keys = [build / "ours.pem", build / "foreign.pem"]
    pubkey = make_key(keys[0])
    make_key(keys[1])
    out = build / "keyed"
    subprocess.run(
        ["make", "-s", "-C", str(BOOT), f"BUILD={out}", f"BOOT_PUBKEY={pubkey}"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (out / "app-1.0.0.bin").symlink_to(build / "app-1.0.0.bin")
    (out / "app-1.1.0.bin").symlink_to(build / "app-1.1.0.bin")
    return out, keys[0], keys[1]


def power_on(build: Path, device: Path, flash: bytes | None) -> tuple[int, str]:
    device.mkdir(exist_ok=True)
    if flash is not None:
        (device / "flash.bin").write_bytes(flash + b"\xff" * (FLASH_SIZE - len(flash)))
    result = subprocess.run(
        [*QEMU, "-kernel", str(build / "boot.elf")],
        cwd=device,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_boots_slot_a_and_the_application_prints_its_version(build: Path, tmp_path: Path) -> None:
    image = signed_image(build, "1.0.0+7")
    app_size = (build / "app-1.0.0.bin").stat().st_size
    code, out = power_on(build, tmp_path / "dev", image)
    assert code == 0, out
    assert out.splitlines() == [
        f"boot: slot A 1.0.0+7 ({app_size} bytes, SHA-256 ok)",
        "app 1.0.0",
    ]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (HEADER_SIZE + 40, "SHA-256 mismatch"),  # a bit flip in the code
        (20, "SHA-256 mismatch"),  # in the header's version
        (0, "no image header (erased or foreign)"),  # the magic
    ],
)
def test_a_damaged_image_is_refused(build: Path, tmp_path: Path, damage: int, reason: str) -> None:
    image = bytearray(signed_image(build, "1.0.0"))
    image[damage] ^= 0x01
    code, out = power_on(build, tmp_path / "dev", bytes(image))
    assert code == 1, out
    assert out.splitlines() == [f"boot: slot A refused: {reason}"]


def test_a_truncated_tlv_area_and_erased_flash_are_refused(build: Path, tmp_path: Path) -> None:
    image = signed_image(build, "1.0.0")
    tlv = len(image) - 4 - 4 - 32  # the TLV info, one TLV header, the digest
    code, out = power_on(build, tmp_path / "a", image[: tlv + 6])
    assert (code, out.strip()) == (1, "boot: slot A refused: TLV area missing or malformed")
    code, out = power_on(build, tmp_path / "b", b"")
    assert (code, out.strip()) == (1, "boot: slot A refused: no image header (erased or foreign)")
    code, out = power_on(build, tmp_path / "c", None)
    assert (code, out.strip()) == (2, "boot: cannot open flash.bin")


def test_bootloader_size(build: Path) -> None:
    out = subprocess.run(
        ["arm-none-eabi-size", str(build / "boot.elf")], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)", out, re.M)
    assert m is not None, out
    text = int(m[1])
    assert text <= 0x10000 and text <= 3000, (
        out
    )  # without a key (no ED25519)  # device/README.md records it


def test_a_pending_update_is_tried_then_confirmed_and_kept(build: Path, tmp_path: Path) -> None:
    old = signed_image(build, "1.0.0")
    new = signed_image(build, "1.1.0", "app-1.1.0")
    dev = tmp_path / "dev"
    code, out = power_on(build, dev, flash(old, new, pending=1))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "boot: slot B 1.1.0+0 swapped in, on trial"
    assert lines[1].startswith("boot: slot A 1.1.0+0 ")
    assert lines[2:] == ["app 1.1.0", "app: confirmed"]
    code, out = power_on(build, dev, None)  # the next power-on boots 1.1.0 directly
    assert code == 0 and out.splitlines()[1:] == ["app 1.1.0"], out
    stored = (dev / "flash.bin").read_bytes()
    assert stored[: len(new)] == new and stored[SLOT_SIZE : SLOT_SIZE + len(old)] == old
    assert struct.unpack_from("<3I", stored, 2 * SLOT_SIZE) == (0x54534A41, 0, 0)


def test_an_update_that_never_confirms_is_reverted(build: Path, tmp_path: Path) -> None:
    old = signed_image(build, "1.0.0")
    new = signed_image(build, "1.1.0", "app-1.1.0-noconfirm")
    dev = tmp_path / "dev"
    code, out = power_on(build, dev, flash(old, new, pending=1))
    assert code == 0 and out.splitlines()[2:] == ["app 1.1.0"], out
    code, out = power_on(build, dev, None)
    lines = out.splitlines()
    assert code == 0, out
    assert lines[0] == "boot: the update on trial was not confirmed: reverted"
    assert lines[1].startswith("boot: slot A 1.0.0+0 ") and lines[2:] == ["app 1.0.0"]
    code, out = power_on(build, dev, None)
    assert code == 0 and len(out.splitlines()) == 2 and "app 1.0.0" in out, out


def test_a_damaged_pending_update_is_refused_and_forgotten(build: Path, tmp_path: Path) -> None:
    old = signed_image(build, "1.0.0")
    new = bytearray(signed_image(build, "1.1.0", "app-1.1.0"))
    new[HEADER_SIZE + 8] ^= 0x80
    dev = tmp_path / "dev"
    code, out = power_on(build, dev, flash(old, bytes(new), pending=1))
    assert code == 0, out
    assert out.splitlines()[0] == "boot: slot B refused: SHA-256 mismatch"
    assert out.splitlines()[2:] == ["app 1.0.0"]
    code, out = power_on(build, dev, None)
    assert code == 0 and len(out.splitlines()) == 2 and "app 1.0.0" in out, out


def test_with_a_key_only_images_it_signed_boot(
    keyed: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    boot, ours, foreign = keyed
    app_size = (boot / "app-1.0.0.bin").stat().st_size
    code, out = power_on(boot, tmp_path / "a", signed_image(boot, "1.0.0", key=ours))
    assert code == 0, out
    assert out.splitlines() == [
        f"boot: slot A 1.0.0+0 ({app_size} bytes, SHA-256 and ED25519 ok)",
        "app 1.0.0",
    ]
    code, out = power_on(boot, tmp_path / "b", signed_image(boot, "1.0.0", key=foreign))
    assert (code, out.strip()) == (1, "boot: slot A refused: ED25519 signature does not verify")
    code, out = power_on(boot, tmp_path / "c", signed_image(boot, "1.0.0"))
    assert (code, out.strip()) == (1, "boot: slot A refused: no ED25519 signature")


def test_an_update_signed_with_another_key_is_refused(
    keyed: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    boot, ours, foreign = keyed
    old = signed_image(boot, "1.0.0", key=ours)
    new = signed_image(boot, "1.1.0", "app-1.1.0", key=foreign)
    code, out = power_on(boot, tmp_path / "dev", flash(old, new, pending=1))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "boot: slot B refused: ED25519 signature does not verify"
    assert lines[1].startswith("boot: slot A 1.0.0+0 ") and lines[2:] == ["app 1.0.0"]
    good = signed_image(boot, "1.1.0", "app-1.1.0", key=ours)
    code, out = power_on(boot, tmp_path / "dev2", flash(old, good, pending=1))
    assert code == 0 and out.splitlines()[2:] == ["app 1.1.0", "app: confirmed"], out
