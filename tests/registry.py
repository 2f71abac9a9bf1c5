"""A real OCI registry for tests: Debian's ``docker-registry`` on a free loopback port.

Its ``notifications.endpoints`` point at a small receiver in the test process, so tests see
the events a registry sends for pushes made by any client.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.loopback_http import running

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def _ephemeral() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (connect, bind to 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A loopback TCP port nothing listens on, for a server a test starts next.

    Picked below the kernel's ephemeral range: between this check and the server's bind, the
    kernel never hands the port to an outgoing connection (the suite makes thousands: a
    device fleet's MQTT and HTTP clients) or to a socket bound to port 0."""
    low = min(_ephemeral()[0], 65536) - 1
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


@dataclass
class Events:
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pushes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.received if e.get("action") == "push"]


@contextmanager
def receiver() -> Iterator[tuple[str, Events]]:
    events = Events()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                data = json.loads(body)
            except ValueError:
                data = {}
            # the registry sends {"events": [...]}; Ajour's own publish event is one object
            batch = data.get("events", []) if "events" in data else [data]
            with events.lock:
                events.received.extend(batch)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with running(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as port:
        yield f"http://127.0.0.1:{port}/events", events


@dataclass
class Registry:
    host: str
    events: Events
    process: subprocess.Popen[bytes]
    root: Path

    def blob_file(self, content: bytes) -> Path:
        """Where this registry stores the blob holding ``content`` (to corrupt it in tests)."""
        hexdigest = hashlib.sha256(content).hexdigest()
        return (
            self.root
            / "storage"
            / "docker"
            / "registry"
            / "v2"
            / "blobs"
            / "sha256"
            / hexdigest[:2]
            / hexdigest
            / "data"
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def run_registry(
    tmp: Path,
    htpasswd: Path | None = None,
    also_notify: str | None = None,
    notify_headers: dict[str, str] | None = None,
) -> Iterator[Registry]:
    """``also_notify`` gets the notifications too, with ``notify_headers`` (distribution's
    ``notifications.endpoints[].headers``, e.g. ``Authorization: Bearer …``)."""
    port = free_port()
    worker_headers = {name: [value] for name, value in (notify_headers or {}).items()}
    with receiver() as (events_url, events):
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {
                "filesystem": {"rootdirectory": str(tmp / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"127.0.0.1:{port}"},
            "notifications": {
                "endpoints": [
                    {
                        "name": name,
                        "url": url,
                        "headers": headers,
                        "timeout": "1s",
                        "threshold": 3,
                        "backoff": "1s",
                    }
                    for name, url, headers in (
                        ("test-receiver", events_url, {}),
                        ("worker", also_notify, worker_headers),
                    )
                    if url
                ]
            },
        }
        if htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "ajour-test", "path": str(htpasswd)}}
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = tmp / "registry.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        log = (tmp / "registry.log").open("wb")
        process = subprocess.Popen([REGISTRY, "serve", str(cfg)], stdout=log, stderr=log)
        registry = Registry(f"127.0.0.1:{port}", events, process, tmp)
        try:
            _wait(port, process, tmp)
            yield registry
        finally:
            if process.poll() is None:
                registry.stop()
            log.close()


def _wait(port: int, process: subprocess.Popen[bytes], tmp: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((tmp / "registry.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as resp:
                resp.read()
                return
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("docker-registry did not start within 20s")


def htpasswd_file(path: Path, user: str, password: str) -> Path:
    subprocess.run(["htpasswd", "-Bbc", str(path), user, password], check=True, capture_output=True)
    return path
