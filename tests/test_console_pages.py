"""The web console in a real browser: every page with real content, sign-in, triggering
and watching a build, progress, no-JavaScript and phone widths.

The browser tests run Debian's chromium (``apt-get install chromium``) through Playwright
against the real stack on loopback: the build service with the console (host-mode fake
builder, real git remote, publishing to an OCI layout directory) and ``ajour-delivery
serve`` reading that layout, with devices simulated over ``POST /v1/dfu``. Screenshots for
docs/console.md are written only with ``AJOUR_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from delivery.device import SimulatedDevice
from delivery.protocol import Command, Write
from tests.console_app import BUILDER, EVIL, LONG, client, config_text, console, fleet_text
from tests.console_browser import Tab
from tests.console_browser import browser as browser  # a fixture
from tests.firmware import fake_builder
from tests.http_wire import device_report
from tests.registry import free_port
from tests.service import TOKEN, Harness


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
