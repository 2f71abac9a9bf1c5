"""The README's main command: the demo runs the whole story and the devices follow a push."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_demo_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo.py"),
            "--runner",
            "container",
            "--workdir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "QEMU printed: AJOUR_FIRMWARE_VERSION=1.0.0" in out
    assert "cached=True" in out
    assert "1.0.0: 20" in out and "1.1.0: 20" in out
    assert "refused: application 'rogue' is not on the build allowlist" in out
