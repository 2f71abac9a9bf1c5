"""schemathesis against the running service: every operation in /openapi.json is fuzzed
(coverage, fuzzing and stateful phases) and every response must match the document
and never be a server error. The run's case count is printed and asserted.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service import TOKEN
from tests.test_service import make

CONFIG = """\
[parameters]
application = "fw"
device = "d1"
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    h = make(tmp_path / "svc", queue=1000)
    h.commit({"a": "1"}, "main")
    h.commit({"b": "1"}, "beta")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    with h.running() as url:
        st = Path(sys.executable).parent / "st"
        result = subprocess.run(
            [
                str(st),
                "--config-file",
                str(config),
                "run",
                f"{url}/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                "all",
                "--max-examples",
                "40",
                "--seed",
                "20261127",
                "--generation-deterministic",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
            cwd=tmp_path,  # schemathesis keeps its state in ./.schemathesis
        )
    print(result.stdout[-400:])  # with -rA: the summary, with how many cases ran
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert counts is not None, result.stdout[-2000:]
    generated, passed = int(counts.group(1)), int(counts.group(2))
    assert generated == passed and generated >= 300, counts.group(0)
