"""Bounds of one build outside the service: its log (linear, capped per line and in all)
and the deadline of its git fetches, against a real git client and a loopback server that
accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from ajour_build.core.errors import SourceError
from ajour_build.runner import job
from ajour_build.runner.job import BuildLog
from ajour_build.steps.clone import clone, resolve_commit

CHUNK = b"x" * 65536  # what the host engine's pump reads at most at once


def feed(log: BuildLog, megabytes: int, budget: float) -> float:
    """Write one line of ``megabytes`` MiB in 64 KiB chunks; fail once ``budget`` s pass."""
    started = time.perf_counter()
    for index in range(megabytes * 16):
        log.write(CHUNK)
        elapsed = time.perf_counter() - started
        assert elapsed < budget, f"{index + 1} chunks of one line took {elapsed:.1f}s"
    return time.perf_counter() - started


def test_a_huge_line_is_split_in_linear_time_and_bounded_memory(tmp_path: Path) -> None:
    lines: list[str] = []
    small = BuildLog(tmp_path / "16.log", lines.append)
    t16 = feed(small, 16, budget=5.0)
    small.close()
    big = BuildLog(tmp_path / "64.log", lines.append)
    t64 = feed(big, 64, budget=5.0)
    big.write(b"\nafter\n")
    big.close()
    # linear: four times the bytes in about four times the time (quadratic would be 16x)
    assert t64 < 8 * t16 + 0.2, (t16, t64)

    tracemalloc.start()
    try:
        log = BuildLog(tmp_path / "mem.log", lambda line: None)
        feed(log, 64, budget=30.0)
        _, peak = tracemalloc.get_traced_memory()
        log.close()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"writing one 64 MiB line kept {peak} bytes"

    # the line keeps its first 64 KiB and says how much was dropped, in the file and as a line
    dropped = 64 * 1024 * 1024 - 65536
    marker = f" [ajour: line truncated, {dropped} more bytes dropped]"
    assert lines[1] == "x" * 65536 + marker
    assert lines[2] == "after"
    text = (tmp_path / "64.log").read_bytes()
    assert text == b"x" * 65536 + marker.encode() + b"\nafter\n"


def test_build_log_is_capped_in_bytes_with_a_note(tmp_path: Path) -> None:
    lines: list[str] = []
    log = BuildLog(tmp_path / "build.log", lines.append, job.LogLimits(1024, 100_000))
    log.note("commit abc")
    for index in range(10_000):  # 10,000 lines of 100 bytes: 1 MB
        log.write(f"{index:099d}\n".encode())
    log.note("the builder exited with code 0")
    log.close()
    data = (tmp_path / "build.log").read_bytes()
    note = "[ajour] log truncated: builder output past 100000 bytes is dropped"
    own = len(b"[ajour] commit abc\n[ajour] the builder exited with code 0\n")
    assert len(data) <= 100_000 + len(note) + 2 + own
    assert note in data.decode()
    assert data.endswith(b"[ajour] the builder exited with code 0\n")  # Ajour's notes stay
    assert note in lines and lines[-1] == "[ajour] the builder exited with code 0"
    reported = [line for line in lines if not line.startswith("[ajour]")]
    assert len(reported) == 1000  # lines past the cap are not reported (nor recorded)
    assert log.tail(1) == [f"{9999:099d}"]  # the tail (failure reasons) still follows


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP server that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.timeout(60)
def test_a_git_server_that_never_answers_ends_the_clone_at_its_deadline(
    tmp_path: Path, silent_server: int
) -> None:
    url = f"https://127.0.0.1:{silent_server}/acme/firmware.git"
    for attempt in (
        lambda: clone(url, "main", tmp_path / "source", timeout=2),
        lambda: resolve_commit(url, "v1.0", timeout=2),
    ):
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            attempt()
        assert time.monotonic() - started < 6
        assert "did not finish within 2s" in str(caught.value)
        assert "service.clone_timeout" in str(caught.value)
