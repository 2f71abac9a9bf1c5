"""The README's main command: the demo runs the whole story, and stops what it started."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

DEMO = [sys.executable, str(REPO / "scripts" / "demo.py"), "--runner", "container", "--exit"]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [*DEMO, "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "refused: application 'rogue' is not on the build allowlist" in out
    assert "remote: ajour: 202 1 build(s) queued" in out  # the git hook fired the webhook
    assert "QEMU printed: AJOUR_FIRMWARE_VERSION=1.0.0" in out
    assert "1.0.0: 20" in out and "1.1.0: 20" in out
    assert re.search(r"trigger the same commit again: 1\.1\.0 sha256:\w+… \(cached\)", out)
    assert re.search(r"1\.1\.0\s+│ sha256:[0-9a-f]{20}", out)  # the summary's digest table
    assert "Console: http://127.0.0.1:" in out and "stopped the build service" in out


@pytest.mark.slow
def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*DEMO, "--workdir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 300
    while "build service and console ready at" not in seen:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the demo never started the service:\n{seen}")
        seen += line
    ports = [int(p) for p in re.findall(r"ready at http://127\.0\.0\.1:(\d+)", seen)]
    assert len(ports) == 2
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, seen + rest
    assert "stopped the build service and console" in rest
    assert "stopped the delivery worker" in rest
    for port in ports:  # nothing listens any more
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
