"""Build the bootloader and the device application (``device/boot``), sign images with
imgtool, and lay out a device's flash file."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
BOOT: Final = REPO / "device" / "boot"
SLOT_SIZE: Final = 0x40000
HEADER_SIZE: Final = 0x200
STATE_MAGIC: Final = 0x54534A41
IMGTOOL: Final = [sys.executable, "-m", "imgtool.main"]


def make(build: Path, *goal: str) -> None:
    """``make -C device/boot BUILD=build goal…``; a failure shows make's output."""
    result = subprocess.run(
        ["make", "-s", "-C", str(BOOT), f"BUILD={build}", *goal],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"make {' '.join(goal)} failed:\n{result.stdout}{result.stderr}")


def make_key(path: Path) -> str:
    """A new ed25519 key at ``path`` (imgtool keygen); its public key as BOOT_PUBKEY wants."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    subprocess.run(
        [*IMGTOOL, "keygen", "-k", str(path), "-t", "ed25519"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    private = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(private, Ed25519PrivateKey)
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return ",".join(map(hex, raw))


def build_device_firmware(
    build: Path, versions: tuple[str, ...], noconfirm: tuple[str, ...] = (), signed: bool = True
) -> Path:
    """The bootloader (with a new ed25519 key, ``key.pem`` in ``build``, if ``signed``) and
    ``app-device-<version>.bin`` for each version (``-noconfirm`` ones too); ``build``."""
    build.mkdir(parents=True, exist_ok=True)
    pubkey = make_key(build / "key.pem") if signed else ""
    make(build, "all", *([f"BOOT_PUBKEY={pubkey}"] if pubkey else []))
    for version in versions:
        make(build, "device", f"APP_VERSION={version}")
    for version in noconfirm:
        make(build, "device", f"APP_VERSION={version}", "APP_CONFIRM=0")
    return build


def signed_image(build: Path, version: str, app: str, key: Path | None = None) -> bytes:
    """``build/<app>.bin`` as imgtool writes an MCUboot image of it (header, image, SHA-256
    TLV), signed with ``key`` (an ED25519 TLV) if given."""
    out = build / f"{app}-{version}-{key.stem if key else 'unsigned'}.img"
    args = ["create", "--version", version, "-H", hex(HEADER_SIZE), "--pad-header"]
    args += ["-k", str(key)] if key else []
    subprocess.run(
        [*IMGTOOL, *args, "-S", hex(SLOT_SIZE), str(build / f"{app}.bin"), str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out.read_bytes()


def flash(slot_a: bytes, slot_b: bytes = b"", pending: int = 0, trial: int = 0) -> bytes:
    """The emulated flash (``flash.bin``): the slots (erased past the images), the state page."""
    state = struct.pack("<4I", STATE_MAGIC, pending, trial, 0)
    erased = b"\xff"
    return b"".join((slot_a.ljust(SLOT_SIZE, erased), slot_b.ljust(SLOT_SIZE, erased), state))


def image_signature_ok(image: bytes, pubkey: bytes) -> bool:
    """Whether the MCUboot ``image`` carries an ED25519 TLV that verifies, with the raw
    ed25519 ``pubkey``, over its SHA-256 TLV (what imgtool signs and the bootloader checks),
    and that SHA-256 is the image's. False for an unsigned or foreign-signed image."""
    import hashlib

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    hdr_size, prot_size, img_size = struct.unpack_from("<HHI", image, 8)
    off = hdr_size + img_size + prot_size
    magic, end = struct.unpack_from("<HH", image, off)
    if magic != 0x6907:
        return False
    tlvs: dict[int, bytes] = {}
    at, end = off + 4, off + end
    while at + 4 <= end:
        kind, size = struct.unpack_from("<HH", image, at)
        tlvs[kind] = image[at + 4 : at + 4 + size]
        at += 4 + size
    digest, signature = tlvs.get(0x10, b""), tlvs.get(0x24, b"")
    if digest != hashlib.sha256(image[: hdr_size + img_size + prot_size]).digest():
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pubkey).verify(signature, digest)
    except (InvalidSignature, ValueError):
        return False
    return True
