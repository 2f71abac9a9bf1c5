"""The web console: HTTP-level checks (auth, refusals, escaping, bad input), then a real browser.

The browser tests run Debian's chromium (``apt-get install chromium``) through Playwright
against the real stack on loopback: the build service with the console (host-mode fake
builder, real git remote, publishing to an OCI layout directory) and ``ajour-delivery
serve`` reading that layout, with devices simulated over ``POST /v1/dfu``. Screenshots for
docs/console.md are written only with ``AJOUR_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright

from ajour_build.console import devices, views
from ajour_build.core.wire import DeviceReport, read_reports
from ajour_build.server import assemble, create_app
from ajour_build.service.backends.backend import QueueFull
from ajour_build.service.state import Service
from ajour_build.settings import LocalSettings
from delivery.device import SimulatedDevice
from delivery.protocol import Command, Write
from tests.conftest import REPO
from tests.firmware import fake_builder
from tests.http_wire import device_report
from tests.registry import free_port
from tests.service import TOKEN, Harness, serve

CHROMIUM = "/usr/bin/chromium"
NOTE = "Failed to load resource: the server responded with a status of"
LONG = 60_000  # ms: a build or a poll cycle on a busy machine
SHOTS = REPO / "docs" / "img"
EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
API_PATHS = ("/api/", "/webhooks/", "/healthz", "/readyz", "/metrics")
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
APP = """\
kind: Application
metadata: {{name: {name}}}
spec:
  firmware:
    container:
      image: {name}:latest
      build:
        image: fake
        source: {{git: {{uri: "{uri}", rev: main}}}}
        artifact: {{path: out/fw.bin}}
"""


def fleet_text(uri: str, app: str, names: list[str], rev: str = "main") -> str:
    devices_ = "".join(f"---\nmetadata: {{name: {n}, application: {app}}}\n" for n in names)
    return APP.format(name=app, uri=uri).replace("rev: main", f"rev: {rev}") + devices_


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


# -- the console over HTTP (no browser) ---------------------------------------------------
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
def stub_delivery(rows: Any, paths: tuple[str, ...] = ("/",)) -> Iterator[str]:
    """A delivery worker stand-in answering every GET under ``paths`` with ``rows`` as JSON,
    any other with 404."""
    body = json.dumps(rows).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
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


def test_templates_autoescape_and_never_mark_data_safe() -> None:
    assert views.ENV.autoescape is not False
    assert views.ENV.from_string("{{ x }}").render(x=EVIL).startswith(ESCAPED)
    assert views.ENV.undefined.__name__ == "StrictUndefined"
    for template in (Path(views.TEMPLATES)).glob("*.html"):
        text = template.read_text()
        assert "|safe" not in text.replace(" ", ""), template
        assert "autoescape false" not in text, template
        assert "<script>" not in text, f"{template}: inline script (CSP forbids it)"


def test_delivery_status_is_read_defensively() -> None:
    [row] = read_reports([
        {"application": "a", "device": "d", "current": 1, "offset": -3, "size": True,
         "state": "Exploded", "lastSeen": float("nan"), "target": ["x"]}
    ])  # fmt: skip
    assert row == DeviceReport(application="a", device="d")
    assert read_reports([["a"], {"application": "a"}, {"device": "d"}]) == []
    [ok] = read_reports([{"application": "a", "device": "d", "offset": 50, "size": 200}])
    assert ok.percent == 25
    assert devices.fetch("").error == "service.delivery_url is not set"
    assert "cannot reach" in devices.fetch(f"http://127.0.0.1:{free_port()}").error
    assert "not a usable URL" in devices.fetch("http://[::1").error
    assert "***@" in devices.fetch(f"http://user:secret@127.0.0.1:{free_port()}/").error


def test_html_in_names_from_delivery_is_escaped(tmp_path: Path) -> None:
    rows = [
        {"application": "fw", "device": EVIL, "current": EVIL, "target": "1.0.0", "offset": 5,
         "size": 10, "state": "Updating", "source": "container", "detail": EVIL, "lastSeen": 1.0},
        {"application": "<b>app</b>", "device": "d", "state": "Synced", "current": "1"},
        "not a row", {"device": "no app"}, 42,
    ]  # fmt: skip
    with (
        stub_delivery(rows) as stub,
        lite(tmp_path, delivery_url=stub) as svc,
        client(svc.url) as c,
    ):
        pages = [
            "/",
            "/devices",
            "/devices/fw",
            "/rollouts",
            "/rollouts/fw",
            "/rollouts/fw?version=1",
        ]
        pages.append("/devices/fw/" + views.segment(EVIL))
        for path in pages:
            page = c.get(path)
            assert page.status_code == 200, (path, page.text)
            assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
            assert "<b>app</b>" not in page.text, path
        assert ESCAPED in c.get("/devices").text
        assert "&lt;b&gt;app&lt;/b&gt;" in c.get("/devices").text
        detail = c.get("/devices/fw/" + views.segment(EVIL)).text
        assert detail.count(ESCAPED) >= 3  # heading, current version, detail
        assert 'value="5" max="10"' in c.get("/devices?fragment=devices").text


def test_reads_need_a_token_unless_public(tmp_path: Path) -> None:
    with lite(tmp_path / "closed") as svc, client(svc.url, token=None) as anon:
        for path in ("/", "/builds", "/devices/fw/d1", "/rollouts/fw"):
            answer = anon.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/login?next=")
        assert anon.get("/?fragment=summary").status_code == 401
        with client(svc.url, token="wrong") as wrong:
            assert wrong.get("/").status_code == 303
        with client(svc.url) as signed_in:
            assert signed_in.get("/").status_code == 200
        with client(svc.url, token=None) as bearer:
            page = bearer.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
            assert page.status_code == 200 and "Overview" in page.text
    with lite(tmp_path / "open", public=True) as svc, client(svc.url, token=None) as anon:
        page = anon.get("/builds")
        assert page.status_code == 200 and "Builds" in page.text
        assert anon.post("/actions/trigger", data={"application": "fw"}).status_code == 401


def test_login_sets_a_strict_http_only_cookie_and_stays_on_site(tmp_path: Path) -> None:
    with lite(tmp_path) as svc, client(svc.url, token=None) as anon:
        form = anon.get("/login?next=/builds")
        assert form.status_code == 200 and 'name="token"' in form.text
        ok = anon.post("/login", data={"token": TOKEN, "next": "/builds?state=failed"})
        assert ok.status_code == 303 and ok.headers["location"] == "/builds?state=failed"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        assert anon.get("/builds").status_code == 200  # the cookie works
        assert anon.post("/logout").status_code == 303
        anon.cookies.clear()
        bad = anon.post("/login", data={"token": "nope", "next": "/"})
        assert bad.status_code == 401 and "not valid" in bad.text
        for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            away = anon.post("/login", data={"token": TOKEN, "next": target})
            assert away.headers["location"] == "/", target


def test_actions_need_a_token_and_refusals_are_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with lite(tmp_path, public=True) as svc:
        with client(svc.url, token=None) as anon:
            refused = anon.post("/actions/trigger", data={"application": "fw", "next": "/"})
            assert refused.status_code == 401 and 'name="token"' in refused.text
            assert "Sign in with an API token" in refused.text
        with client(svc.url, token="x") as wrong:
            assert wrong.post("/actions/trigger", data={"application": "fw"}).status_code == 401
        with client(svc.url, token=None) as anon:
            assert anon.post("/builds/b-1/cancel").status_code == 401
        with client(svc.url) as c:
            rogue = c.post("/actions/trigger", data={"application": "rogue"})
            assert rogue.status_code == 403 and "rogue" in rogue.text
            assert "allowlist" in rogue.text.lower()
            assert c.post("/actions/trigger", data={"application": "ghost"}).status_code == 404
            assert c.post("/actions/trigger", data={}).status_code == 400
            assert c.post("/builds/b-nope/cancel").status_code == 404
            queued = c.post("/actions/trigger", data={"application": "fw"})
            assert queued.status_code == 303
            build_id = queued.headers["location"].removeprefix("/builds/")
            assert svc.service.records.get(build_id) is not None
            svc.harness.wait(build_id, ("succeeded",))

            def full(*_: Any, **__: Any) -> None:
                raise QueueFull("the build queue has room for 0 build(s)", retry_after=30)

            monkeypatch.setattr(svc.service.scheduler, "trigger", full)
            busy = c.post("/actions/trigger", data={"application": "fw"})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "30"
            assert "queue is full" in busy.text


def test_bad_input_gets_a_page_never_a_500(tmp_path: Path) -> None:
    with lite(tmp_path, delivery_url=f"http://127.0.0.1:{free_port()}") as svc:
        with client(svc.url) as c:
            cases = {
                "/builds?state=bogus": 400,
                "/builds?offset=-1": 400,
                "/builds?offset=abc": 400,
                "/builds?app=" + "a" * 100: 400,
                "/builds?app=%00&device=%ff": 200,
                "/builds/" + "x" * 300: 404,
                "/builds/%00": 404,
                "/builds/%3Cscript%3E": 404,
                "/devices/fw/ghost": 404,
                "/devices/ghost": 404,
                "/devices/fw/d1/extra": 404,
                "/rollouts/ghost": 404,
                "/rollouts/fw?version=" + "v" * 200: 400,
                "/?fragment=nope": 404,
                "/nowhere": 404,
            }
            for path, status in cases.items():
                page = c.get(path, headers={"Accept": "text/html"})
                assert page.status_code == status, (path, page.status_code, page.text[:300])
                assert page.headers["content-type"].startswith("text/html"), path
                assert "<script>" not in page.text.replace('<script src="/static/', "")
            overview = c.get("/")
            assert overview.status_code == 200 and "Delivery unreachable" in overview.text
            listed = c.get("/devices")
            assert 'href="/devices/fw/d1"' in listed.text and "Unknown" in listed.text
            huge = c.post("/login", content=b"token=" + b"x" * 70_000)
            assert huge.status_code == 413
            api = c.get("/api/v1/nowhere", headers={"Accept": "text/html"})
            assert api.status_code == 404 and api.headers["content-type"] == "application/json"
            assert c.get("/nowhere").headers["content-type"] == "application/json"
            documented = c.get("/openapi.json").json()["paths"]
            assert not [p for p in documented if not p.startswith(API_PATHS)]
            assert c.get("/static/console.css").status_code == 200


# -- the real stack in a real browser -----------------------------------------------------
@dataclass
class Stack:
    """Service with console, delivery worker, fleet ``fw`` (6 devices) and ``beta`` (1)."""

    harness: Harness
    url: str
    delivery: str
    first_build: str
    slow: SimulatedDevice = field(default_factory=lambda: SimulatedDevice(b"0.9.0", mtu=64))

    def report(self, name: str, device: SimulatedDevice) -> Command:
        """One status from ``device`` as ``fw/<name>``; it applies the command it gets."""
        return device_report(self.delivery, "fw", name, device, None)

    def step_slow(self, steps: int) -> int:
        """Move the slow device ``steps`` blocks on; return the offset delivery reports."""
        offset = -1
        for _ in range(steps):
            command = self.report("slow", self.slow)
            assert isinstance(command, Write), command
            offset = command.offset
        return offset


def ajour_delivery(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ajour-delivery"), *args]


@contextmanager
def delivery_worker(root: Path, port: int) -> Iterator[str]:
    """``ajour-delivery serve`` on loopback, serving the OCI layout the builds publish to."""
    log = root / "delivery.log"
    args = ajour_delivery("serve", "--http", f"127.0.0.1:{port}", "--fleet", str(root / "fleet"))
    args += ["--registry", f"oci-layout://{root / 'oci'}", "--insecure-no-auth"]
    with log.open("w") as sink:
        worker = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "devices in the fleet" not in log.read_text():
            assert worker.poll() is None, f"delivery worker died: {log.read_text()}"
            assert time.monotonic() < deadline, f"delivery did not start: {log.read_text()}"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        worker.terminate()
        worker.wait(30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("console")
    port = free_port()
    config = config_text(["fw", "beta", "gamma"], f"http://127.0.0.1:{port}", root / "oci", False)
    harness = Harness(root, config)
    fake_builder(root / "builders", "fake", BUILDER)
    (root / "fleet").mkdir()
    harness.commit({"VERSION": "1.0.0\n"})
    names = ["dev0", "dev1", "dev2", "slow", "evil", "idle"]
    (root / "fleet" / "fw.yaml").write_text(fleet_text(harness.remote_uri, "fw", names))
    (root / "fleet" / "beta.yaml").write_text(fleet_text(harness.remote_uri, "beta", ["b0"]))
    broken = fleet_text(harness.remote_uri, "gamma", [], rev="no-such-branch")
    (root / "fleet" / "gamma.yaml").write_text(broken)
    with delivery_worker(root, port) as delivery, console(harness, root) as (url, _):
        with client(url) as api:
            doomed = api.post("/api/v1/applications/gamma/trigger").json()["triggered"][0]
            queued = api.post("/api/v1/applications/fw/trigger")
            assert queued.status_code == 202, queued.text
            first = queued.json()["triggered"][0]["id"]
        assert harness.wait(doomed["id"], ("succeeded", "failed"))["state"] == "failed"
        assert harness.wait(first, ("succeeded", "failed"))["state"] == "succeeded"
        args = ["--app", "fw", "--devices", "3", "--start-version", "0.9.0", "--json"]
        simulated = subprocess.run(
            ajour_delivery("simulate", "--http", delivery, *args),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert json.loads(simulated.stdout)["versions"] == {"1.0.0": 3}, simulated.stdout
        stack = Stack(harness, url, delivery, first)
        stack.report("evil", SimulatedDevice(EVIL.encode(), mtu=64))  # a hostile version
        stack.step_slow(2)
        yield stack


@dataclass
class Tab:
    """A browser page that records console errors, uncaught exceptions and dialogs."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def unexpected(self, *statuses: int) -> list[str]:
        """Errors, but for the browser's note on pages we asked for with these statuses."""
        notes = {f"error: {NOTE} {status} " for status in statuses}
        return [e for e in self.errors if not any(e.startswith(n) for n in notes)]

    def open(self, path: str, status: int = 200) -> None:
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == status, (path, response)

    def sign_in(self) -> None:
        self.open("/login?next=/")
        self.page.get_by_label("API token").fill(TOKEN)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(self.base + "/")

    def text(self, selector: str) -> str:
        return self.page.locator(selector).first.inner_text()

    def shoot(self, name: str) -> None:
        """Save docs/img/console-<name>.png, only when AJOUR_UPDATE_SCREENSHOTS=1."""
        if os.environ.get("AJOUR_UPDATE_SCREENSHOTS") == "1":
            SHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "the browser tests need Debian's chromium: apt install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def tab(
    browser: Browser, stack: Stack, width: int = 1280, height: int = 800, script: bool = True
) -> Iterator[Tab]:
    context = browser.new_context(
        viewport={"width": width, "height": height}, java_script_enabled=script
    )
    try:
        yield Tab(context.new_page(), stack.url)
    finally:
        context.close()


@pytest.mark.slow
def test_every_page_shows_real_content(browser: Browser, stack: Stack) -> None:
    with tab(browser, stack) as t:
        t.open("/builds")
        assert "/login" in t.page.url  # reads need a token here
        t.sign_in()
        expect(t.page.locator("[data-count=device-synced]")).to_have_text("3")
        assert t.text("h1") == "Overview"
        assert int(t.text("[data-count=build-succeeded]")) >= 1
        assert int(t.text("[data-count=build-failed]")) >= 1
        assert t.text("[data-count=device-updating]") == "2"
        assert t.page.locator("#events li").count() >= 6  # queued, running, succeeded/failed
        t.shoot("overview")

        t.open("/builds")
        row = t.page.locator(f"tr[data-build='{stack.first_build}']")
        assert "succeeded" in row.inner_text() and "1.0.0" in row.inner_text()
        headers = t.page.locator("thead th[scope=col]").all_inner_texts()
        assert [h.lower() for h in headers][:7] == [
            "build", "application / consumers", "commit", "state", "duration", "digest", "version"
        ]  # fmt: skip
        t.open("/builds?state=cancelled")
        assert "No build matches these filters" in t.text("#builds")
        t.open("/builds?state=failed")
        assert "gamma" in t.text("#builds") and "fw" not in t.text("#builds tbody")
        t.open("/builds?app=fw&state=succeeded")
        assert t.page.locator(f"tr[data-build='{stack.first_build}']").count() == 1
        t.open("/builds")
        t.shoot("builds")

        t.open(f"/builds/{stack.first_build}")
        assert t.text("#build-state") == "succeeded"
        assert "done" in t.text("#build-log") and "building 1.0.0" in t.text("#build-log")
        assert "sha256:" in t.text(".fields") and "fw/dev0" in t.text(".fields")
        assert t.page.get_by_role("button", name="Rebuild fw").is_visible()
        assert t.page.get_by_role("button", name="Cancel build").count() == 0
        t.shoot("build")

        t.open("/devices")
        dev0 = t.page.locator("tr[data-device='fw/dev0']")
        assert "Synced" in dev0.inner_text() and "1.0.0" in dev0.inner_text()
        assert "Unknown" in t.text("tr[data-device='fw/idle']")
        bar = t.page.get_by_role("progressbar", name=re.compile(r"Update of slow: \d+%"))
        assert bar.get_attribute("max") == str(4096 + len("fw 1.0.0 \n") + 40)
        assert t.page.locator("section.app h2").all_inner_texts() == ["beta", "fw", "gamma"]
        t.shoot("devices")

        t.open("/devices/fw/dev0")
        assert "1.0.0" in t.text("#status") and "Synced" in t.text("#status")
        assert "fw:latest" in t.text("main") and stack.first_build[:10] in t.page.content()
        t.open("/devices/fw")
        assert t.page.locator("section.app h2").all_inner_texts() == ["fw"]

        t.open("/rollouts")
        assert "3 of 6 on it" in t.text("#rollouts")
        t.open("/rollouts/fw")
        counts = {k: t.text(f"[data-count={k}]") for k in ("on", "updating", "waiting", "total")}
        assert counts == {"on": "3", "updating": "2", "waiting": "1", "total": "6"}
        assert t.page.get_by_label("Firmware version").input_value() == ""
        t.shoot("rollout")
        t.open("/rollouts/fw?version=0.9.0")
        assert t.text("[data-count=on]") == "1"  # the slow device still runs 0.9.0

        for path, title, link in (
            ("/builds/b-nope", "No such build", "All builds"),
            ("/devices/fw/ghost", "No such device", "Devices of fw"),
            ("/rollouts/ghost", "No such application", "Back"),
            ("/no/such/page", "Page not found", "Builds"),
        ):
            t.open(path, status=404)
            assert t.text("h1") == title
            assert t.page.get_by_role("link", name=link).first.is_visible()
        assert t.unexpected(404) == []


@pytest.mark.slow
def test_sign_in_trigger_and_watch_the_build_finish(browser: Browser, stack: Stack) -> None:
    stack.harness.commit({"VERSION": "1.1.0\n", "delay": "2\n"})
    with tab(browser, stack) as t:
        t.sign_in()
        t.open("/rollouts/beta")
        t.page.get_by_role("button", name="Build beta").click()
        t.page.wait_for_url(re.compile(r"/builds/b-[0-9a-f-]+$"))
        t.page.evaluate("window.stayedOnPage = true")
        assert t.text("#build-state") in ("queued", "running")
        expect(t.page.locator("#build-log")).to_contain_text("tick 1", timeout=LONG)
        expect(t.page.locator("#build-state")).to_have_text("succeeded", timeout=LONG)
        expect(t.page.locator("#build-log")).to_contain_text("done", timeout=LONG)
        assert t.page.evaluate("window.stayedOnPage") is True  # no reload: live updates
        assert "1.1.0" in t.text(".fields")
        assert t.text("#build-log").count("tick 1") == 1  # appended once, not repeated
        build_id = t.page.url.rsplit("/", 1)[1]
        t.open("/builds?app=beta")
        assert "succeeded" in t.text(f"tr[data-build='{build_id}']")
        assert t.errors == []


@pytest.mark.slow
def test_a_progress_bar_follows_an_update(browser: Browser, stack: Stack) -> None:
    with tab(browser, stack) as t:
        t.sign_in()
        t.open("/devices")
        bar = "progress[data-device='fw/slow']"
        before = int(t.page.locator(bar).get_attribute("value") or "-1")
        offset = stack.step_slow(3)
        assert offset == before + 3 * 64
        t.page.evaluate("window.stayedOnPage = true")
        expect(t.page.locator(bar)).to_have_attribute("value", str(offset), timeout=LONG)
        offset = stack.step_slow(5)
        expect(t.page.locator(bar)).to_have_attribute("value", str(offset), timeout=LONG)
        label = t.page.locator(bar).get_attribute("aria-label") or ""
        assert re.fullmatch(r"Update of slow: \d+% of \d+ bytes", label), label
        assert t.page.evaluate("window.stayedOnPage") is True
        t.open("/devices/fw/slow")
        assert t.page.locator(bar).get_attribute("value") == str(offset)
        assert t.errors == []


@pytest.mark.slow
def test_logged_out_users_cannot_trigger(browser: Browser, stack: Stack) -> None:
    with client(stack.url, token=None) as anon:
        refused = anon.post("/actions/trigger", data={"application": "fw"})
        assert refused.status_code == 401
    with client(stack.url) as api:
        before = len(api.get("/api/v1/builds").json()["items"])
    with tab(browser, stack) as t:
        t.open(f"/builds/{stack.first_build}")
        assert "/login" in t.page.url
        t.sign_in()
        t.open(f"/builds/{stack.first_build}")
        t.page.context.clear_cookies()  # signed out in another tab, say
        with t.page.expect_response(lambda r: r.url.endswith("/actions/trigger")) as answer:
            t.page.get_by_role("button", name="Rebuild fw").click()
        assert answer.value.status == 401
        assert "Sign in with an API token to trigger builds" in t.text("main")
        assert t.page.get_by_label("API token").is_visible()
        t.page.get_by_label("API token").fill(TOKEN)
        t.page.get_by_role("button", name="Sign in").click()
        t.page.wait_for_url(f"{stack.url}/builds/{stack.first_build}")
        assert t.unexpected(401) == []
    with client(stack.url) as api:
        assert len(api.get("/api/v1/builds").json()["items"]) == before


@pytest.mark.slow
def test_html_reported_by_a_device_shows_as_text(browser: Browser, stack: Stack) -> None:
    with tab(browser, stack) as t:
        t.sign_in()
        for path in ("/devices", "/devices/fw/evil", "/rollouts/fw"):
            t.open(path)
            assert t.page.get_by_text(EVIL).first.is_visible(), path
            live = t.page.locator("[data-live]").first
            expect(live).to_have_attribute("data-live-state", "ok", timeout=LONG)
            assert t.page.get_by_text(EVIL).first.is_visible(), path  # after a live swap too
            assert t.page.locator("main img, main script").count() == 0, path
        assert t.dialogs == []
        assert t.errors == []


@pytest.mark.slow
def test_phone_width_has_no_horizontal_overflow(browser: Browser, stack: Stack) -> None:
    with tab(browser, stack, width=375, height=740) as t:
        t.sign_in()
        for path in (
            "/",
            "/builds",
            f"/builds/{stack.first_build}",
            "/devices",
            "/devices/fw/evil",
            "/rollouts",
            "/rollouts/fw",
            "/audit",
            "/login",
        ):
            t.open(path)
            width = t.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (path, width)
        assert t.page.locator("nav[aria-label=Main] a").count() == 5  # signed in: and Audit
        t.open("/audit?action=trigger&app=fw")  # the stack's API trigger, in the audit log
        row = t.page.locator("tr[data-audit]").first
        expect(row).to_contain_text("trigger")
        expect(row).to_contain_text("token:")
        assert t.errors == []


@pytest.mark.slow
def test_read_views_work_without_javascript(browser: Browser, stack: Stack) -> None:
    with tab(browser, stack, script=False) as t:
        t.sign_in()
        assert t.text("[data-count=device-synced]") == "3"
        t.open("/builds")
        t.page.get_by_label("State").select_option("failed")
        t.page.get_by_role("button", name="Filter").click()
        t.page.wait_for_url(re.compile(r"/builds\?.*state=failed"))
        assert "gamma" in t.text("#builds tbody")
        t.open("/rollouts/fw")
        t.page.get_by_label("Firmware version").select_option("1.0.0")
        t.page.get_by_role("button", name="Show").click()
        t.page.wait_for_url(re.compile(r"version=1\.0\.0"))
        assert t.text("[data-count=on]") == "3"
        t.open(f"/builds/{stack.first_build}")
        assert "done" in t.text("#build-log")
        assert t.errors == []
