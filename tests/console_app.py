"""The web console under test: the service with the console on loopback, a token-carrying
client, a light service without builds, and a stub delivery worker serving fixed rows."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from ajour_build.server import assemble, create_app
from ajour_build.service.state import Service
from ajour_build.settings import LocalSettings
from tests.firmware import built_app, fake_builder
from tests.service import TOKEN, Harness, serve

LONG = 60_000  # ms: a build or a poll cycle on a busy machine
EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
# the fake builder of tests/service.py, with firmware large enough to watch it transfer
BUILDER = """\
delay=$(cat delay 2>/dev/null || echo 0)
echo "building $AJOUR_FIRMWARE_VERSION at $AJOUR_SOURCE_COMMIT"
i=0
while [ "$i" -lt "$delay" ]; do sleep 1; i=$((i + 1)); echo "tick $i"; done
mkdir -p "$(dirname "$AJOUR_ARTIFACT_PATH")"
printf 'fw %s %s\\n' "$AJOUR_FIRMWARE_VERSION" "$AJOUR_SOURCE_COMMIT" > "$AJOUR_ARTIFACT_PATH"
head -c 4096 /dev/zero >> "$AJOUR_ARTIFACT_PATH"
echo done
"""


def fleet_text(uri: str, app: str, names: list[str], rev: str = "main") -> str:
    devices_ = "".join(f"---\nmetadata: {{name: {n}, application: {app}}}\n" for n in names)
    return built_app(app, uri, rev=rev) + devices_


def config_text(allowed: list[str], delivery_url: str, layout: Path | None, public: bool) -> str:
    publish = f"publish: true\n  publish_to: oci-layout://{layout}" if layout else "publish: false"
    return (
        f"allowed_applications: [{', '.join(allowed)}]\n"
        "sources: {allow_local: true}\n"
        f"service:\n  tokens: [{TOKEN}]\n  runner: host\n  {publish}\n"
        f"  delivery_url: '{delivery_url}'\n  public_read: {str(public).lower()}\n"
    )


@contextmanager
def console(harness: Harness, root: Path) -> Iterator[tuple[str, Service]]:
    settings = LocalSettings(state_dir=root / "state", builders_dir=root / "builders")
    service = assemble([root / "fleet"], harness.config(), settings, root / "builders", False)
    with serve(create_app(service, console=True)) as url:
        harness.url = url
        yield url, service


def client(url: str, token: str | None = TOKEN) -> httpx.Client:
    cookies = {"ajour_token": token} if token else None
    return httpx.Client(base_url=url, cookies=cookies, timeout=30, follow_redirects=False)


@dataclass
class Lite:
    url: str
    service: Service
    harness: Harness


@contextmanager
def lite(root: Path, public: bool = False, delivery_url: str = "") -> Iterator[Lite]:
    """The service with the console, apps ``fw`` (allowed) and ``rogue`` (refused)."""
    harness = Harness(root, config_text(["fw"], delivery_url, None, public))
    fake_builder(root / "builders", "fake", BUILDER)
    (root / "fleet").mkdir()
    harness.commit({"VERSION": "1.0.0\n"})
    (root / "fleet" / "fw.yaml").write_text(fleet_text(harness.remote_uri, "fw", ["d1", "d2"]))
    (root / "fleet" / "rogue.yaml").write_text(fleet_text(harness.remote_uri, "rogue", []))
    with console(harness, root) as (url, service):
        yield Lite(url, service, harness)


@contextmanager
def stub_delivery(
    rows: Any, paths: tuple[str, ...] = ("/",), seen: list[str] | None = None
) -> Iterator[str]:
    """A delivery worker stand-in answering every GET under ``paths`` with ``rows`` as JSON,
    any other with 404; the path of each GET is appended to ``seen``."""
    body = json.dumps(rows).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if seen is not None:
                seen.append(self.path)
            if not self.path.startswith(paths):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
