"""The C delta applier (device/src/delta.c), under ASan and UBSan: it rebuilds what
detools.apply_patch rebuilds, in any chunking, and agrees with delivery/delta.py on garbled
and truncated patches (both refuse, or both give the same image)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.delta import PatchError, apply_patch
from tests.conftest import REPO
from tests.test_delta import detools_apply, image_pairs, make_patch

DEVICE = REPO / "device"


@pytest.fixture(scope="module")
def applier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("delta-build")
    made = subprocess.run(
        ["make", "-s", "-C", str(DEVICE), f"BUILD={out}", "delta"],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "delta.o" in made.stdout  # arm-none-eabi-size's line for the Cortex-M3 object
    return out / "host" / "test_delta"


def run_c(applier: Path, work: Path, old: bytes, patch: bytes, chunk: int) -> bytes | None:
    """The new image the C applier makes, or None if it refuses the patch."""
    (work / "old").write_bytes(old)
    (work / "patch").write_bytes(patch)
    done = subprocess.run(
        [applier, work / "old", work / "patch", work / "new", str(chunk)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2+: usage; ASan aborts
    if done.returncode == 1:
        assert done.stdout.startswith("error -"), done.stdout
        return None
    return (work / "new").read_bytes()


def test_built_in_checks(applier: Path) -> None:
    done = subprocess.run([applier], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and "0 failures" in done.stdout, done.stdout + done.stderr


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(image_pairs(), st.sampled_from(["crle", "none"]), st.sampled_from([0, 1, 3, 64]))
def test_c_equals_detools(
    applier: Path, tmp_path: Path, pair: tuple[bytes, bytes], compression: str, chunk: int
) -> None:
    old, new = pair
    patch = make_patch(old, new, compression)
    assert detools_apply(old, patch) == new
    assert run_c(applier, tmp_path, old, patch, chunk) == new


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    image_pairs(),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3),
    st.integers(0, 10_000),
    st.sampled_from([0, 1, 5]),
)
def test_c_agrees_with_python_on_damaged_patches(
    applier: Path,
    tmp_path: Path,
    pair: tuple[bytes, bytes],
    flips: list[tuple[int, int]],
    cut: int,
    chunk: int,
) -> None:
    old, new = pair
    patch = bytearray(make_patch(old, new))
    for at, value in flips:
        patch[at % len(patch)] = value
    damaged = bytes(patch[: len(patch) - cut % 3])  # sometimes truncated too
    try:
        expected: bytes | None = apply_patch(old, damaged, max_size=1 << 20)
    except PatchError:
        expected = None
    assert run_c(applier, tmp_path, old, damaged, chunk) == expected


def test_c_rebuilds_the_real_firmware_update(applier: Path, tmp_path: Path) -> None:
    """The patch between two c-blinky-sized images with a one-line change, byte by byte."""
    old = bytes(range(256)) * 17
    new = old[:1000] + b"\x05" + old[1001:]
    assert run_c(applier, tmp_path, old, make_patch(old, new), 1) == new


def test_updater_applies_patches_when_built_with_delta(tmp_path: Path) -> None:
    """``make check DELTA=1`` (ASan, UBSan): the status advertises bit 0 (key 4) and the
    updater applies WritePatch through the platform's write, swaps at the rebuilt size, falls
    back (no more advertising) when the patch or the rebuilt image is refused, and never
    advertises while a full image is resumed."""
    done = subprocess.run(
        ["make", "-s", "-C", str(DEVICE), f"BUILD={tmp_path}", "DELTA=1", "check"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "delta: checked" in done.stdout and ", 0 failures" in done.stdout, done.stdout


def arm_sizes(build: Path, *args: str) -> dict[str, int]:
    """``make arm`` (Cortex-M3 objects): each object's text bytes; every object needs nothing
    from libc but memcpy and memset."""
    made = subprocess.run(
        ["make", "-s", "-C", str(DEVICE), f"BUILD={build}", *args, "arm"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    sizes = {
        Path(m[2]).stem: int(m[1])
        for m in re.finditer(r"^\s*(\d+)\s+\d+\s+\d+\s+\d+\s+\S+\s+(\S+)$", made.stdout, re.M)
    }
    for name in sizes:
        undefined = subprocess.run(
            ["arm-none-eabi-nm", "-u", build / "arm" / f"{name}.o"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        outside = {sym for sym in undefined[1::2] if not sym.startswith("ajour_")}
        assert outside <= {"memcpy", "memset"}, (name, undefined)
    return sizes


def test_delta_costs_nothing_unless_built_with_it(tmp_path: Path) -> None:
    """Without DELTA=1 the objects are the ones without delta updates (device/README.md's
    sizes); with it, delta.o joins them and codec/updater grow by the WritePatch code."""
    plain = arm_sizes(tmp_path / "plain")
    delta = arm_sizes(tmp_path / "delta", "DELTA=1")
    assert set(plain) == {"codec", "updater", "sha256", "frame"}, plain
    assert set(delta) == {*plain, "delta"}, delta
    symbols = subprocess.run(
        ["arm-none-eabi-nm", tmp_path / "plain" / "arm" / "updater.o"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "ajour_delta" not in symbols and "enable_delta" not in symbols, symbols
    assert delta["codec"] > plain["codec"] and delta["updater"] > plain["updater"], delta
    assert sum(delta.values()) - sum(plain.values()) <= 2200, (plain, delta)
