"""A QEMU device updates by delta patch: the C updater in firmware (device/boot/app/device.c,
built with APP_DELTA=1) advertises detools patches, the real worker serves the patch layer
the publisher made in an OCI layout (1.0.0 published, then 1.1.0: a one-line change and the
version), through the product gateway over HTTP; the device rebuilds 1.1.0 from slot A into
slot B, the bootloader checks SHA-256 and ED25519 and swaps, and the device confirms. The
gateway counts the bytes. A corrupted patch falls back to the full image; a power cut in a
patch download starts the patch over at byte 0 on the next power-on."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.patches import PATCH_MEDIA_TYPE, patch_layers
from ajour_devices.firmware import SLOT_SIZE, flash, signed_image
from ajour_devices.qemu import QemuDevice
from ajour_devices.server import MTU, Served, build_firmware, image, publish, serving
from delivery.delta import PatchError, apply_patch
from tests.conftest import REPO

RECEIVE = "#define APP_RECEIVE_MS 2000u\n"


def changed(build: Path, out: Path, version: str, table: int = 0) -> bytes:
    """``version`` of the device app from a copy of device/ with one line changed (the reply
    timeout, 2000 -> 2500 ms), signed with the bootloader's key; ``table`` random bytes of
    constant data on top make a patch of several WritePatches."""
    src = out / "device"
    shutil.copytree(REPO / "device", src, ignore=shutil.ignore_patterns("build"))
    app = src / "boot" / "app" / "device.c"
    text = app.read_text()
    assert RECEIVE in text
    text = text.replace(RECEIVE, "#define APP_RECEIVE_MS 2500u\n")
    if table:
        data = ", ".join(str(b) for b in random.Random(7).randbytes(table))
        text = text.replace("int main(void)\n{", f"static const uint8_t table[] = {{{data}}};\n\n"
                            "int main(void)\n{", 1)  # fmt: skip
        text = text.replace('    sh_write0("app " APP_VERSION "\\n");\n',
                            '    sh_write0("app " APP_VERSION "\\n");\n'
                            "    if (state.reserved == 0xFFFFFFFFu) {\n"
                            "        sh_write_dec(table[state.progress % sizeof table]);\n"
                            "    }\n", 1)  # fmt: skip
    app.write_text(text)
    subprocess.run(
        ["make", "-s", "-C", str(src / "boot"), f"BUILD={out}", "device", f"APP_VERSION={version}"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return signed_image(out, version, f"app-device-{version}", key=build / "key.pem")


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_firmware(tmp_path_factory.mktemp("device-build"))


def device_on(served: Served, tmp: Path, boot: Path, slot_a: bytes, name: str) -> QemuDevice:
    device = QemuDevice(name, tmp / name, boot, served.uplink(name))
    (device.folder / "flash.bin").write_bytes(flash(slot_a))
    return device


def patch_of(tmp: Path) -> bytes:
    store = LayoutStore(tmp / "oci" / "fw" / "app")
    (layer,) = patch_layers(store.inspect("latest"))[0]
    assert layer.from_version == "1.0.0"
    return store.read_blob(layer.descriptor.digest)


def update(served: Served, tmp: Path, boot: Path, old: bytes, name: str) -> QemuDevice:
    device = device_on(served, tmp, boot, old, name)
    try:
        run = device.power_on()
        assert run.wait(60) == 0, run.lines()
    finally:
        device.stop()
    return device


def wire(device: QemuDevice) -> int:
    return device.stats.bytes_in + device.stats.bytes_out


def test_a_qemu_device_updates_by_patch_with_20x_fewer_bytes(build: Path, tmp_path: Path) -> None:
    old = image(build, "1.0.0")
    new = changed(build, tmp_path / "new", "1.1.0")
    boot = build / "boot.elf"
    (tmp_path / "d").mkdir()
    publish(tmp_path / "d", "1.0.0", old)  # the publisher makes the patch from 1.0.0
    with serving(tmp_path / "d", ["dev0"], "1.1.0", new) as served:
        patch = patch_of(tmp_path / "d")
        assert apply_patch(old, patch) == new and len(patch) < MTU
        device = update(served, tmp_path, boot, old, "dev0")
        counts = served.worker.counters.snapshot()
        row = served.worker.store.get("app", "dev0") if served.worker.store else None
    lines = device.runs[0].lines()
    assert lines[1:3] == ["app 1.0.0", "app: swap, reset"], lines
    assert lines[3] == "boot: slot B 1.1.0+0 swapped in, on trial"
    assert lines[4].startswith("boot: slot A 1.1.0+0 ")
    assert lines[4].endswith("SHA-256 and ED25519 ok)")
    assert lines[5:] == ["app 1.1.0", "app: confirmed", "app: synced 1.1.0"]
    assert device.stats.replies == 3  # WritePatch, Swap, then Sync after the reset
    assert counts.get("writepatch", 0) == 1 and counts.get("write", 0) == 0, counts
    assert row is not None and (row.state, row.current) == ("Synced", "1.1.0")
    stored = (device.folder / "flash.bin").read_bytes()
    assert stored[: len(new)] == new and stored[SLOT_SIZE : SLOT_SIZE + len(old)] == old

    # the same update without the patch (a layout holding 1.1.0 alone): the full image
    with serving(tmp_path / "f", ["full"], "1.1.0", new) as served:
        full = update(served, tmp_path, boot, old, "full")
    assert full.stats.replies == -(-len(new) // MTU) + 2
    numbers = {
        "image": len(new), "patch": len(patch),
        "wire_full": wire(full), "wire_patch": wire(device),
        "ratio": round(wire(full) / wire(device), 1),
        "seconds_patch": round(device.runs[0].seconds, 2),
        "seconds_full": round(full.runs[0].seconds, 2),
    }  # fmt: skip
    print("\nqemu delta:", json.dumps(numbers))
    assert wire(full) >= 20 * wire(device), numbers


def corrupt_patch(tmp: Path, old: bytes, new: bytes) -> None:
    """Flip one byte of the 1.1.0 manifest's patch layer, where the patch still applies but
    makes another image, and rewrite the layout (blob, manifest, index) around it."""
    store = LayoutStore(tmp / "oci" / "fw" / "app")
    index = store.index()
    body, digest = store.manifest("latest")
    manifest = json.loads(body)
    (layer,) = [d for d in manifest["layers"] if d["mediaType"] == PATCH_MEDIA_TYPE]
    patch = store.read_blob(layer["digest"])
    for at in range(len(patch) // 2, len(patch)):
        bad = bytearray(patch)
        bad[at] ^= 0x01
        try:
            if apply_patch(old, bytes(bad)) != new:
                break
        except PatchError:
            continue
    else:  # pragma: no cover
        raise AssertionError("no byte of the patch makes another image")
    layer["digest"] = store.put_bytes(bytes(bad))
    body = json.dumps(manifest).encode()
    new_digest = store.put_bytes(body)
    for entry in index["manifests"]:
        if entry["digest"] == digest:
            entry["digest"], entry["size"] = new_digest, len(body)
    (store.root / "index.json").write_bytes(store.index_bytes(index["manifests"]))


def test_a_corrupted_patch_falls_back_to_the_full_image(build: Path, tmp_path: Path) -> None:
    old = image(build, "1.0.0")
    new = changed(build, tmp_path / "new", "1.1.0")
    publish(tmp_path, "1.0.0", old)
    with serving(tmp_path, ["dev0"], "1.1.0", new) as served:
        corrupt_patch(tmp_path, old, new)
        served.worker.targets.invalidate()
        assert apply_patch(old, patch_of(tmp_path)) != new
        device = update(served, tmp_path, build / "boot.elf", old, "dev0")
        counts = served.worker.counters.snapshot()
    lines = device.runs[0].lines()
    # the rebuilt image fails the Swap's SHA-256 (AJOUR_E_VERIFY), then the full image
    assert lines[1:4] == ["app 1.0.0", "app: error 7", "app: swap, reset"], lines
    assert lines[4] == "boot: slot B 1.1.0+0 swapped in, on trial"
    assert lines[6:] == ["app 1.1.0", "app: confirmed", "app: synced 1.1.0"]
    assert counts.get("writepatch", 0) == 1, counts
    assert counts.get("write", 0) == -(-len(new) // MTU) and counts.get("swap", 0) == 2, counts
    assert (device.folder / "flash.bin").read_bytes()[: len(new)] == new


def test_power_lost_in_a_patch_download_starts_it_over(build: Path, tmp_path: Path) -> None:
    """A patch of 4 WritePatches (3 KiB of new constant data); the power is cut after the
    second is sent; the next power-on reports no update and gets the patch from byte 0."""
    old = image(build, "1.0.0")
    new = changed(build, tmp_path / "new", "1.1.0", table=3000)
    publish(tmp_path, "1.0.0", old)
    with serving(tmp_path, ["dev0"], "1.1.0", new) as served:
        patch = patch_of(tmp_path)
        writes = -(-len(patch) // MTU)
        assert writes >= 3, len(patch)
        device = device_on(served, tmp_path, build / "boot.elf", old, "dev0")
        try:
            cut = device.power_on()
            deadline = time.monotonic() + 30
            while device.stats.replies < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            cut.kill()  # power lost: 2 WritePatches sent, the 2nd perhaps not applied
            assert cut.lines()[1:] == ["app 1.0.0"], cut.lines()
            before = device.stats.replies
            run = device.power_on()
            assert run.wait(60) == 0, run.lines()
        finally:
            device.stop()
        counts = served.worker.counters.snapshot()
    lines = run.lines()
    assert lines[1:3] == ["app 1.0.0", "app: swap, reset"], lines  # no "resume at"
    assert lines[-1] == "app: synced 1.1.0"
    assert device.stats.replies - before == writes + 2  # the whole patch again, Swap, Sync
    assert counts.get("write", 0) == 0, counts
    assert (device.folder / "flash.bin").read_bytes()[: len(new)] == new
