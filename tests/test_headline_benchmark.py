"""Smoke test of ``benchmarks/headline.py --quick``: git push → build → registry → worker →
100 simulated MQTT devices, and its floor, end to end (about 20 s). Benchmarks are not unit
tests: this checks that the run works and reports consistent figures, not how fast it is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_headline_quick_runs_end_to_end() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "headline.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    full, delta = report["runs"]
    assert (full["devices"], full["delta"], delta["delta"]) == (100, False, True)
    assert full["data_bytes_per_device"] == [256 * 1024] == [full["image_bytes"]]
    assert full["floor"]["round_trips_per_device"] == 256 * 1024 // 512 + 2
    counted = full["worker_counters"]
    assert counted['commands_total{type="write"}'] == 100 * 512
    assert counted['commands_total{type="swap"}'] == 100
    (patch,) = delta["data_bytes_per_device"]
    assert 0 < patch < 1024, patch  # a one-line change: one WritePatch
    assert delta["worker_counters"]['commands_total{type="writepatch"}'] == 100
    for run in (full, delta):
        assert 0 < run["published_s"] < run["total_s"]
        assert run["floor"]["total_s"] > 0 and run["ratio"] == pytest.approx(
            run["total_s"] / run["floor"]["total_s"]
        )
    assert report["goal"] == {"judged": False, "met": True}
