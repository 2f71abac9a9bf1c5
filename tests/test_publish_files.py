"""What publishing leaves on disk: modes that follow the umask, and no temporary files of a
publisher that was killed mid-write (and never those of a publisher still writing).

Publishers run as real processes (the ``ajour-build publish`` CLI, or a script killed with
SIGKILL), on real files.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.reference import parse_layout
from ajour_build.core.errors import PublishError
from ajour_build.core.files import exclusive_lock
from ajour_build.publish.destination import publisher_for
from ajour_build.publish.layout import LayoutPublisher
from ajour_build.publish.publisher import FirmwareArtifact
from tests.conftest import REPO

BIG = 64 << 20  # a firmware image large enough to be caught mid-write


def cli(*args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ajour_build.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        umask=-1 if umask is None else umask,
    )


def targets(root: Path) -> dict[str, tuple[str, Path]]:
    """Each file-writing target: its URL and the directory it writes."""
    return {
        "oci-layout": (f"oci-layout://{root / 'layout'}:latest", root / "layout"),
        "dir": (f"dir://{root / 'files' / 'sensor'}", root / "files"),
    }


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
@pytest.mark.parametrize("kind", ["oci-layout", "dir"])
def test_published_files_follow_the_umask(tmp_path: Path, umask: int, kind: str) -> None:
    url, written = targets(tmp_path)[kind]
    for version, content in (("1.0", b"one"), ("1.1", b"two"), ("1.1", b"two")):
        firmware = tmp_path / f"fw-{version}.bin"
        firmware.write_bytes(content)
        done = cli("publish", str(firmware), "--to", url, "--version", version, umask=umask)
        assert done.returncode == 0, done.stderr
    files = [p for p in written.rglob("*") if p.is_file()]
    assert {"index.json", "sensor.json", "sensor.bin"} & {p.name for p in files}
    for path in [*files, *(p for p in written.rglob("*") if p.is_dir())]:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == expected, f"{path} is {mode:o}, expected {expected:o} (umask {umask:03o})"


KILLED_PUBLISHER = """
import sys
from pathlib import Path
from ajour_build.publish.destination import publisher_for
from ajour_build.publish.publisher import FirmwareArtifact
publisher_for(sys.argv[1], {}).publish(FirmwareArtifact(Path(sys.argv[2]), "1.0"))
"""


def _size(path: Path) -> int:
    """The size of a file a live publisher may rename away between listing and stat."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def kill_mid_write(url: str, firmware: Path, written: Path) -> list[Path]:
    """Start a publisher of ``firmware`` and SIGKILL it while a temporary file it writes
    under ``written`` exists; returns the temporary files it left."""
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_PUBLISHER, url, str(firmware)], cwd=REPO
        )
        try:
            give_up = time.monotonic() + 60
            while child.poll() is None and time.monotonic() < give_up:
                partial = [p for p in written.rglob(".tmp-*") if _size(p) > 0]
                if partial:
                    child.send_signal(signal.SIGKILL)
                    child.wait(10)
                    return list(written.rglob(".tmp-*"))
                time.sleep(0.0005)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    pytest.fail("the publisher never was caught mid-write in 5 tries")


@pytest.mark.parametrize("kind", ["oci-layout", "dir"])
def test_the_next_publish_sweeps_what_a_killed_publisher_left(tmp_path: Path, kind: str) -> None:
    url, written = targets(tmp_path)[kind]
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        fh.truncate(BIG)  # sparse: quick to make, a full 64 MiB to copy
    left = kill_mid_write(url, big, written)
    assert left, "the killed publisher left its temporary file"
    small = tmp_path / "small.bin"
    small.write_bytes(b"next")
    published = publisher_for(url, {}).publish(FirmwareArtifact(small, "2.0"))
    assert published.version == "2.0"
    assert not list(written.rglob(".tmp-*")), "the next publish removed the dead one's file"


def test_a_temporary_file_of_a_publisher_still_writing_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    LayoutStore(root).init()
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"fw")
    live = root / "blobs" / "sha256" / f".tmp-0123456789ab-{'0' * 64}"
    outcome: list[object] = []
    with exclusive_lock(root / ".lock", 5, "test"):  # a publisher in the middle of its write
        live.write_bytes(b"half a blob")
        publishing = threading.Thread(
            target=lambda: outcome.append(
                publisher_for(f"oci-layout://{root}:latest", {}).publish(
                    FirmwareArtifact(firmware, "1.0")
                )
            )
        )
        publishing.start()
        time.sleep(0.5)
        assert publishing.is_alive(), "the second publisher waits for the first"
        assert live.read_bytes() == b"half a blob", "and does not touch its file"
    publishing.join(10)
    assert outcome and not live.exists(), "once its writer is gone, the file is swept"


def test_a_publisher_that_holds_the_layout_too_long_is_named(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    root.mkdir()
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"fw")
    publisher = LayoutPublisher(parse_layout(f"oci-layout://{root}:latest"), lock_wait=0.3)
    with (
        exclusive_lock(root / ".lock", 5, "test"),
        pytest.raises(PublishError) as error,
    ):
        publisher.publish(FirmwareArtifact(firmware, "1.0"))
    message = str(error.value)
    assert f"the OCI layout {root} is locked by another writer (process {os.getpid()}" in message
    assert "for more than 0.3 s" in message and "stop it and try again" in message
