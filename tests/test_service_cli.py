"""``ajour-build serve`` as a user runs it: a subprocess, real HTTP, secrets from the env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from ajour_build.cli import main
from tests.registry import free_port
from tests.test_service import make

TOOL = str(Path(sys.executable).parent / "ajour-build")


def test_serve_refuses_to_run_open_by_accident(tmp_path: Path, runner: CliRunner) -> None:
    make(tmp_path)  # the fleet
    config = tmp_path / "fleet" / "ajour.yaml"
    config.write_text("allowed_applications: [fw]\n")
    fleet = str(tmp_path / "fleet")
    no_tokens = runner.invoke(main, ["serve", "--fleet", fleet, "--config", str(config)])
    assert no_tokens.exit_code == 1
    assert "needs API tokens" in no_tokens.output and "service.tokens" in no_tokens.output
    exposed = runner.invoke(
        main, ["serve", "--fleet", fleet, "--insecure-no-auth", "--host", "0.0.0.0"]
    )
    assert exposed.exit_code == 1 and "only allowed on loopback" in exposed.output


def test_serve_subprocess_with_secrets_from_the_environment(tmp_path: Path) -> None:
    h = make(tmp_path)
    config = tmp_path / "fleet" / "ajour.yaml"
    config.write_text("allowed_applications: [fw]\nservice: {runner: host, publish: false}\n")
    port = free_port()
    token = "tok-from-env-5f2a"
    env = {
        **os.environ,
        "AJOUR_SERVICE__TOKENS": f'["{token}"]',
        "AJOUR_SERVICE__WEBHOOKS__GITHUB": "hook-from-env",
        "AJOUR_STATE_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.Popen(
        [
            TOOL,
            "--debug",
            "serve",
            "--fleet",
            str(tmp_path / "fleet"),
            "--port",
            str(port),
            "--builders",
            str(tmp_path / "builders"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.communicate()[1]) from None
                time.sleep(0.1)
        assert ready.status_code == 200, ready.text
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/api/v1/builds", headers=headers).status_code == 200
        assert httpx.get(f"{url}/api/v1/builds").status_code == 401
        h.url = url
        h.commit({"a": "1"})
        hook = h.github({"zen": "z"}, secret="hook-from-env", event="ping")
        assert hook.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "build service stopped" in err
    assert f"http://127.0.0.1:{port}" in err
    # secrets never reach the output, even with --debug
    assert token not in err and "hook-from-env" not in err
