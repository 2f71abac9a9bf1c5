"""The C device library (device/): its unit tests, the updater against the real worker,
hypothesis against the Python codec, and its Cortex-M build and size.

The library is compiled with the host gcc (ASan + UBSan, so an overread crashes) and driven
through ``ajour_host`` (device/host/ajour_host.c), which speaks length-prefixed frames on
stdin/stdout.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ajour_build.core.fleet import load_fleet
from delivery.frames import read_frame, write_frame
from delivery.protocol import (
    Command,
    ProtocolError,
    Status,
    Swap,
    Sync,
    UpdateStatus,
    Wait,
    Write,
    decode_command,
    encode_command,
    encode_status,
)
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.conftest import REPO
from tests.test_sources import publish

DEVICE = REPO / "device"
VECTORS = REPO / "tests" / "data" / "vectors" / "embedded-update.tsv"
FRAME_VECTORS = REPO / "device" / "tests" / "uart-frames.tsv"
FLEET = """\
kind: Application
metadata: {name: app}
spec: {firmware: {container: {image: fw/app:latest}}}
---
metadata: {name: dev0, application: app}
"""


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("device-build")
    subprocess.run(
        ["make", "-s", "-C", str(DEVICE), f"BUILD={out}", "host"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out / "host"


def test_unit_binary_checks_every_packed_vector(build: Path) -> None:
    result = subprocess.run(
        [build / "test_codec", VECTORS], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 packed vectors checked" in result.stdout
    assert re.search(r"\b\d{3,} checks, 0 failures", result.stdout), result.stdout


def test_unit_binary_checks_every_uart_frame_vector(build: Path) -> None:
    """The C framing (src/frame.c) against the vectors tests/test_frames.py checks Python's."""
    result = subprocess.run(
        [build / "test_frame", FRAME_VECTORS], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in FRAME_VECTORS.read_text().splitlines() if line[:1] not in "#"]
    assert f"vectors: {len(rows)} frame vectors checked" in result.stdout
    assert re.search(r"\b\d{3,} checks, 0 failures", result.stdout), result.stdout


# ---- the updater against the real worker ---------------------------------------------------


@dataclass
class Session:
    returncode: int
    log: list[str]
    exchanges: int

    def written(self) -> list[tuple[int, int]]:
        return [
            (int(m[1]), int(m[2]))
            for line in self.log
            if (m := re.fullmatch(r"write (\d+) (\d+)", line))
        ]


def run_device(
    host: Path, worker: Worker, flash: Path, running: str, *extra: str, buf: int = 1024
) -> Session:
    """One power-on of the C updater, talking to ``worker`` until it syncs or powers off."""
    flash.mkdir(exist_ok=True)
    log = flash / "log"
    args = [str(host / "ajour_host"), "update", running, str(flash / "slot")]
    args += [str(flash / "state"), str(buf), str(256 * 1024), *extra]
    exchanges = 0
    with log.open("w") as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            while (status := read_frame(proc.stdout)) is not None:
                reply = worker.handle("app", "dev0", status)
                assert reply is not None, "the worker refused the C device's status"
                exchanges += 1
                try:
                    write_frame(proc.stdin, reply)
                except BrokenPipeError:  # powered off while the reply was on its way
                    break
        finally:
            proc.stdin.close()
            returncode = proc.wait(timeout=60)
            proc.stdout.close()
    return Session(returncode, log.read_text().splitlines(), exchanges)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[Worker, bytes]]:
    image = os.urandom(40_000)
    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "1.1.0", image)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    targets = Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}")
    yield Worker(targets, StatusStore()), image


def test_c_updater_converges_with_the_real_worker(
    build: Path, worker: tuple[Worker, bytes], tmp_path: Path
) -> None:
    w, image = worker
    session = run_device(build, w, tmp_path / "flash", "1.0.0")
    assert session.returncode == 0, session.log
    mtu = 1024 - (24 + 32)  # the buffer less AJOUR_WRITE_OVERHEAD
    writes = session.written()
    assert writes[0] == (0, mtu) and sum(n for _, n in writes) == len(image)
    assert [o for o, _ in writes] == list(range(0, len(image), mtu))
    assert session.log[-4:] == [f"swap 1.1.0 {len(image)}", "reboot", "confirm", "synced 1.1.0"]
    assert (tmp_path / "flash" / "slot").read_bytes()[: len(image)] == image
    assert session.exchanges == len(writes) + 2  # the writes, Swap, Sync
    row = w.store.get("app", "dev0") if w.store else None
    assert row is not None and (row.state, row.current) == ("Synced", "1.1.0")


def test_power_loss_resumes_at_the_offset_reached(
    build: Path, worker: tuple[Worker, bytes], tmp_path: Path
) -> None:
    w, image = worker
    flash = tmp_path / "flash"
    first = run_device(build, w, flash, "1.0.0", "5")  # power off at the 6th write
    assert first.returncode == 3 and first.log[-1] == "power off"
    reached = sum(n for _, n in first.written())
    assert reached == 5 * 968
    second = run_device(build, w, flash, "1.0.0")
    assert second.returncode == 0, second.log
    assert second.log[0] == f"resume {reached}"
    assert second.written()[0][0] == reached, "the download restarted instead of resuming"
    assert reached + sum(n for _, n in second.written()) == len(image)
    assert (flash / "slot").read_bytes()[: len(image)] == image


def test_a_corrupted_slot_is_refused_at_swap_and_downloaded_again(
    build: Path, worker: tuple[Worker, bytes], tmp_path: Path
) -> None:
    w, image = worker
    flash = tmp_path / "flash"
    assert run_device(build, w, flash, "1.0.0", "3").returncode == 3
    slot = bytearray((flash / "slot").read_bytes())
    slot[100] ^= 0xFF  # a bit flip in what was already written
    (flash / "slot").write_bytes(bytes(slot))
    session = run_device(build, w, flash, "1.0.0")
    assert session.returncode == 0, session.log
    assert "swap refused: checksum" in session.log
    restart = session.log.index("swap refused: checksum")
    assert session.written()[0][0] == 3 * 968  # resumed first ...
    after = [line for line in session.log[restart:] if line.startswith("write ")]
    assert after[0].startswith("write 0 ")  # ... then started over from 0
    assert hashlib.sha256((flash / "slot").read_bytes()[: len(image)]).digest() == (
        hashlib.sha256(image).digest()
    )


# ---- hypothesis: the C codec against the Python one -------------------------------------


class Pipe:
    """A long-lived ajour_host in ``decode`` or ``encode`` mode: one frame in, one answer."""

    def __init__(self, host: Path, mode: str) -> None:
        self.proc = subprocess.Popen(
            [host / "ajour_host", mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def decode(self, data: bytes) -> str:
        write_frame(self.stdin, data)
        line = self.stdout.readline().decode()
        assert line, f"ajour_host crashed on {data.hex()}"
        return line.strip()

    def encode(self, line: str) -> bytes:
        write_frame(self.stdin, line.encode())
        out = read_frame(self.stdout)
        assert out is not None, f"ajour_host crashed on {line!r}"
        return out

    def close(self) -> None:
        self.stdin.close()
        returncode = self.proc.wait(timeout=30)
        self.stdout.close()
        assert returncode == 0


@pytest.fixture(scope="module")
def decoder(build: Path) -> Iterator[Pipe]:
    pipe = Pipe(build, "decode")
    yield pipe
    pipe.close()


@pytest.fixture(scope="module")
def encoder(build: Path) -> Iterator[Pipe]:
    pipe = Pipe(build, "encode")
    yield pipe
    pipe.close()


def _opt(v: int | None) -> str:
    return "-" if v is None else str(v)


def describe(cmd: Command) -> str:
    """A Python command in ajour_host's ``OK ...`` line format."""
    kind = {Wait: 0, Sync: 1, Write: 2, Swap: 3}[type(cmd)]
    version = getattr(cmd, "version", b"")
    poll = getattr(cmd, "poll", None)
    offset = getattr(cmd, "offset", 0)
    data, checksum = getattr(cmd, "data", b""), getattr(cmd, "checksum", b"")
    return (
        f"OK {kind} x{version.hex()} {_opt(cmd.correlation_id)} {_opt(poll)} {offset} "
        f"x{data.hex()} x{checksum.hex()}"
    )


u32 = st.integers(0, 2**32 - 1)
opt_u32 = st.none() | u32
small = st.binary(max_size=40)
commands = st.one_of(
    st.builds(Wait, opt_u32, opt_u32),
    st.builds(Sync, small, opt_u32, opt_u32),
    st.builds(Write, small, opt_u32, u32, st.binary(max_size=1200)),
    st.builds(Swap, small, opt_u32, st.binary(max_size=40)),
)
HYPOTHESIS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(commands)
def test_c_decodes_every_command_python_encodes(decoder: Pipe, cmd: Command) -> None:
    assert decoder.decode(encode_command(cmd)) == describe(cmd)


def _check_against_python(decoder: Pipe, data: bytes) -> None:
    answer = decoder.decode(data)
    assert re.fullmatch(r"ERR -[1-9]|OK .*", answer), answer
    try:
        expected: Command | None = decode_command(data)
    except ProtocolError:
        expected = None
    if answer.startswith("OK"):
        assert expected is not None, f"C accepted what Python refuses: {data.hex()}"
        assert answer == describe(expected)
    elif expected is not None:
        # C reads the packed form only; Python also takes names, text versions and
        # non-shortest keys. Anything canonical-packed must be accepted by both.
        assert encode_command(expected) != data, f"C refused a packed command: {data.hex()}"


@HYPOTHESIS
@given(st.binary(max_size=64))
def test_c_decoder_on_random_bytes(decoder: Pipe, data: bytes) -> None:
    _check_against_python(decoder, data)


@HYPOTHESIS
@given(commands, st.data())
def test_c_decoder_on_damaged_commands(decoder: Pipe, cmd: Command, draw: st.DataObject) -> None:
    wire = bytearray(encode_command(cmd))
    for _ in range(draw.draw(st.integers(1, 3))):
        at = draw.draw(st.integers(0, len(wire)))
        action = draw.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(wire):
            wire[at] ^= draw.draw(st.integers(1, 255))
        elif action == "cut":
            del wire[at:]
        else:
            wire[at:at] = draw.draw(st.binary(min_size=1, max_size=9))
    _check_against_python(decoder, bytes(wire))


statuses = st.builds(
    Status,
    st.binary(max_size=40),
    opt_u32,
    opt_u32,
    st.none() | st.builds(UpdateStatus, st.binary(max_size=40), u32),
)


@HYPOTHESIS
@given(statuses)
def test_c_encodes_statuses_as_python_does(encoder: Pipe, status: Status) -> None:
    update = status.update
    line = " ".join(
        (
            status.version.hex() or ".",
            _opt(status.mtu),
            _opt(status.correlation_id),
            "-" if update is None else update.version.hex() or ".",
            "0" if update is None else str(update.offset),
        )
    )
    assert encoder.encode(line) == encode_status(status)


# ---- the Cortex-M build -----------------------------------------------------------------


def test_library_cross_builds_for_cortex_m3_and_stays_small(tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "-s", "-C", str(DEVICE), f"BUILD={tmp_path}", "arm"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    sizes = {
        Path(m[2]).stem: int(m[1])
        for m in re.finditer(r"^\s*(\d+)\s+\d+\s+\d+\s+\d+\s+\S+\s+(\S+)$", result.stdout, re.M)
    }
    assert set(sizes) == {"codec", "updater", "sha256", "frame"}, result.stdout
    for name in sizes:
        header = subprocess.run(
            ["arm-none-eabi-readelf", "-h", tmp_path / "arm" / f"{name}.o"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "ARM" in header and "ELF32" in header
        undefined = subprocess.run(
            ["arm-none-eabi-nm", "-u", tmp_path / "arm" / f"{name}.o"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        outside = {sym for sym in undefined[1::2] if not sym.startswith("ajour_")}
        assert outside <= {"memcpy", "memset"}, (name, undefined)
    # text bytes, -Os -mthumb (device/README.md); a regression past these is a decision
    assert sizes["codec"] + sizes["updater"] <= 2500 and sizes["sha256"] <= 1100, sizes
    assert sizes["frame"] <= 500, sizes  # COBS + CRC-32 without a table (430 B)
