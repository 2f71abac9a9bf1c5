"""Both CLIs follow one exit code scheme (README "Exit codes"): 0 ok, 1 error, 2 usage, 3 a
port in use; under ``--json`` an error is a JSON object with ``error`` on stdout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLEET = str(ROOT / "examples" / "fleet")
BUILD = [sys.executable, "-m", "ajour_build.cli"]
DELIVERY = [sys.executable, "-m", "delivery.cli"]


def run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AJOUR_STATE_DIR": str(tmp / "state")}
    env.pop("AJOUR_CONFIG", None)
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env
    )


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port another process (here: the test) listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("cli", [BUILD, DELIVERY], ids=["ajour-build", "ajour-delivery"])
def test_ok_is_0_and_usage_is_2(cli: list[str], tmp_path: Path) -> None:
    assert run([*cli, "--version"], tmp_path).returncode == 0
    helped = run([*cli, "--help"], tmp_path)
    assert helped.returncode == 0 and "Exit codes: 0 success; 1 an error" in helped.stdout
    assert "3 a port in use" in helped.stdout
    usage = run([*cli, "serve", "--no-such-option"], tmp_path)
    assert usage.returncode == 2, usage.stderr
    assert "No such option" in usage.stderr and "Traceback" not in usage.stderr


def test_an_error_is_1_with_error_on_stderr(tmp_path: Path) -> None:
    missing = run([*BUILD, "validate", str(tmp_path / "nowhere")], tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("error: "), missing.stderr
    url = f"http://127.0.0.1:{closed_port()}"
    down = run([*DELIVERY, "status", "--url", url, "--token", "t"], tmp_path)
    assert down.returncode == 1 and down.stderr.startswith("error: cannot read status from")


def test_ajour_build_serve_port_in_use_is_3_with_the_option_to_change(tmp_path: Path) -> None:
    with taken_port() as port:
        args = ["serve", "--fleet", FLEET, "--insecure-no-auth", "--port", str(port)]
        result = run([*BUILD, *args], tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: port {port} on 127.0.0.1 is in use (another ajour-build serve?):"
        " choose another with --port (or --host)"
    )
    assert "Traceback" not in result.stderr and "ERROR:" not in result.stderr


def test_ajour_delivery_serve_port_in_use_is_3_with_the_option_to_change(tmp_path: Path) -> None:
    with taken_port() as port:
        args = ["serve", "--fleet", FLEET, "--insecure-no-auth", "--http", f"127.0.0.1:{port}"]
        result = run([*DELIVERY, *args], tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip() == (
        f"error: port {port} on 127.0.0.1 is in use (another ajour-delivery?):"
        " choose another with --http HOST:PORT"
    )


def test_an_address_that_is_not_ours_is_an_error_1(tmp_path: Path) -> None:
    result = run(
        [*BUILD, "serve", "--fleet", FLEET, "--host", "192.0.2.1", "--port", "1"], tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert (
        "cannot listen on 192.0.2.1:1" in result.stderr and "choose another with" in result.stderr
    )


def test_json_errors_are_json_on_stdout_with_exit_1(tmp_path: Path) -> None:
    target = f"oci-layout://{tmp_path / 'none'}:latest"
    inspected = run([*BUILD, "inspect", "--json", target], tmp_path)
    assert inspected.returncode == 1, inspected.stderr
    assert set(json.loads(inspected.stdout)) == {"error"} and inspected.stderr == ""
    config = run(
        [*BUILD, "validate", "--json", FLEET, "--config", str(tmp_path / "x.yaml")], tmp_path
    )
    assert config.returncode == 1 and "error" in json.loads(config.stdout)
    url = f"http://127.0.0.1:{closed_port()}"
    status = run([*DELIVERY, "status", "--json", "--url", url, "--token", "t"], tmp_path)
    assert status.returncode == 1
    assert json.loads(status.stdout)["error"].startswith("cannot read status from")
    rollouts = run([*DELIVERY, "rollout", "list", "--json", "--url", url, "--token", "t"], tmp_path)
    assert rollouts.returncode == 1 and rollouts.stderr == ""
    assert json.loads(rollouts.stdout)["error"].startswith("cannot reach the delivery worker")
