"""Bounds of one build outside the service: its log (linear, capped per line and in all)
and the deadline of its git fetches, against a real git client and a loopback server that
accepts connections and never answers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from ajour_build.core.errors import PublishError, SourceError
from ajour_build.publish import notify
from ajour_build.publish.hawkbit import HawkbitPublisher
from ajour_build.publish.hawkbit_auth import HawkbitAuth
from ajour_build.publish.publisher import FirmwareArtifact, Published
from ajour_build.runner import job
from ajour_build.runner.job import BuildLog
from ajour_build.steps.clone import clone, resolve_commit
from tests.stall import dripping, silent

CHUNK = b"x" * 65536  # what the host engine's pump reads at most at once


def feed(log: BuildLog, megabytes: int, budget: float) -> float:
    """Write one line of ``megabytes`` MiB in 64 KiB chunks; fail once ``budget`` s pass.
    Time is this thread's CPU time: what the writes cost, not how often the thread ran."""
    started = time.thread_time()
    for index in range(megabytes * 16):
        log.write(CHUNK)
        elapsed = time.thread_time() - started
        assert elapsed < budget, f"{index + 1} chunks of one line took {elapsed:.1f}s"
    return time.thread_time() - started


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
    with silent() as server:
        yield server.port


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


@pytest.mark.timeout(60)
def test_hawkbit_requests_share_one_deadline(tmp_path: Path, silent_server: int) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"firmware")
    publisher = HawkbitPublisher(
        f"http://127.0.0.1:{silent_server}",
        "fw",
        auth=HawkbitAuth(token="t0ken"),
        timeout=1.0,
        deadline=2.5,
        retries=3,
        backoff=0.5,
    )
    started = time.monotonic()
    with pytest.raises(PublishError) as caught:
        publisher.publish(FirmwareArtifact(firmware, "1.0.0"))
    # four tries of one second and 3.5 s of backoff would take 7.5 s; the deadline is 2.5 s
    assert time.monotonic() - started < 6  # (the margin is for a loaded machine)
    assert "did not finish within its 2.5s deadline" in str(caught.value)
    assert "t0ken" not in str(caught.value)


@pytest.mark.timeout(60)
def test_notify_ends_at_its_timeout_even_when_the_answer_drips(tmp_path: Path) -> None:
    published = Published("oci://r/fw:latest", "r/fw@sha256:" + "0" * 64, "sha256:" + "0" * 64, "1")
    with dripping() as server:
        started = time.monotonic()
        with pytest.raises(PublishError) as caught:
            notify.send(f"http://127.0.0.1:{server.port}/v1/events", published, timeout=2)
        assert time.monotonic() - started < 8  # the drip never ends; the margin: a loaded machine
        assert server.connections, "the event never reached the server"
    assert "no answer within 2s" in str(caught.value)


@pytest.mark.timeout(60)
def test_an_mqtt_notification_to_a_silent_broker_ends_at_its_timeout(silent_server: int) -> None:
    published = Published("oci://r/fw:latest", "r/fw@sha256:" + "0" * 64, "sha256:" + "0" * 64, "1")
    started = time.monotonic()
    with pytest.raises(PublishError) as caught:
        notify.send(f"mqtt://127.0.0.1:{silent_server}/ajour/events", published, timeout=2)
    assert time.monotonic() - started < 8  # the broker never answers; the margin: a loaded machine
    assert "no answer within 2s" in str(caught.value)


@pytest.mark.timeout(60)
def test_ctrl_c_during_a_stalled_clone_leaves_no_git_behind(tmp_path: Path) -> None:
    with silent() as server:
        url = f"https://127.0.0.1:{server.port}/acme/firmware.git"
        code = (
            "import sys; from pathlib import Path; from ajour_build.steps.clone import clone\n"
            "try:\n    clone(sys.argv[1], 'main', Path(sys.argv[2]))\n"
            "except KeyboardInterrupt:\n    sys.exit(130)\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, url, str(tmp_path / "src")], cwd=Path.cwd()
        )
        until = time.monotonic() + 20
        while not server.connections:
            assert time.monotonic() < until and proc.poll() is None, "git never connected"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        left = subprocess.run(["pgrep", "-f", url], capture_output=True, text=True).stdout
        assert left.strip() == "", f"git processes outlived the clone: {left}"
