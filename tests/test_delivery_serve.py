"""``ajour-delivery serve`` as installed: settings from ajour.yaml, /metrics, SIGHUP reloads."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO
from tests.registry import free_port

FLEET = """\
kind: Application
metadata: {name: app}
spec: {firmware: {file: {name: fw}}}
---
kind: Device
metadata: {name: d1, application: app}
"""


def get(port: int, path: str, token: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if callable(check) and check():
                return
        except ConnectionRefusedError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_serve_reads_ajour_yaml_serves_metrics_and_reloads_on_sighup(tmp_path: Path) -> None:
    port = free_port()
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "fleet.yaml").write_text(FLEET)
    (fleet / "ajour.yaml").write_text(
        "delivery:\n"
        f"  http: 127.0.0.1:{port}\n"
        f"  file_dir: {tmp_path / 'files'}\n"
        '  status_tokens: ["st-123"]\n'
        '  events_tokens: ["ev-456"]\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("AJOUR_DELIVERY_STATUS_TOKEN", None)
    env.pop("AJOUR_DELIVERY_EVENTS_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "delivery.cli", "serve", "--fleet", str(fleet)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: get(port, "/v1/status", "st-123")[0] == 200, "serve to answer")
        status, body = get(port, "/v1/status", "st-123")
        assert [d["device"] for d in json.loads(body)] == ["d1"]
        assert get(port, "/metrics", "wrong")[0] == 401
        status, body = get(port, "/metrics", "st-123")
        assert status == 200 and b'ajour_delivery_devices{state="Unknown"} 1.0' in body
        with (fleet / "fleet.yaml").open("a") as fh:
            fh.write("---\nkind: Device\nmetadata: {name: d2, application: app}\n")
        proc.send_signal(signal.SIGHUP)

        def two() -> bool:
            return len(json.loads(get(port, "/v1/status", "st-123")[1])) == 2

        wait_for(two, "the reload")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err.decode()
        text = err.decode()
        assert "fleet.yaml" in text or "ajour.yaml" in text  # says where its settings came from
        assert "st-123" not in text and "ev-456" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
