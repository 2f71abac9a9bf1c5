"""A real MQTT broker for tests: mosquitto on a free loopback port."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.registry import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@contextmanager
def run_broker(
    tmp: Path,
    passwd: Path | None = None,
    acl: Path | None = None,
    user: str | None = None,
    listener: str = "",
) -> Iterator[int]:
    """Start mosquitto on loopback (anonymous unless a password file is given); yield its port.

    It runs as ``user`` (default: ours). Started as root, mosquitto switches to that user
    before it reads the password file and ACL, so they must be readable by it. ``listener``:
    more settings for the listener (``cafile``/``certfile``/``keyfile``: TLS).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "mosquitto.conf"
    text = (
        f"listener {port} 127.0.0.1\n{listener}persistence false\n"
        f"user {user or getpass.getuser()}\n"
        "set_tcp_nodelay true\n"
    )
    if passwd is None:
        text += "allow_anonymous true\n"
    else:
        text += f"allow_anonymous false\npassword_file {passwd}\n"
    if acl is not None:
        text += f"acl_file {acl}\n"
    conf.write_text(text)
    with start_mosquitto(conf, port, tmp / "mosquitto.log"):
        yield port


@contextmanager
def start_mosquitto(conf: Path, port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``mosquitto -c conf`` until the block ends, once it accepts connections on ``port``
    (loopback), and yield its process; its output goes to ``log_path``, and its last lines
    into the error if it stops at once."""
    log = log_path.open("wb")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(log_path.read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start within 10s") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
