"""The console's rollout pages over the delivery worker's rollout API: waves, held-back
devices, history, and operations sent with the operator token.

The worker is the real one (tests/rollout_worker.py: ``Worker`` with ``Rollouts`` on a SQLite
file, served by ``HttpTransport`` on loopback with the status and operator tokens), in the
states of tests/rollout_states.py; what a test asserts the console sent, it asserts on the
worker's resulting rollouts, outcome log and refusal counter. The browser tests run
Debian's chromium like tests/test_console_pages.py and, with ``AJOUR_UPDATE_SCREENSHOTS=1``,
write docs/img/console-rollouts.png and docs/img/console-rollout-detail.png.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from markupsafe import escape
from playwright.sync_api import Browser, expect

from ajour_build.console import staged
from ajour_build.core.rollout.model import Outcome, Rollout, State
from ajour_build.core.rollout.report import RolloutAction
from delivery.http import HttpSettings
from delivery.protocol import Sync
from tests.console_app import BUILDER, LONG, client, config_text, console, fleet_text, stub_delivery
from tests.console_browser import Tab
from tests.console_browser import browser as browser  # the module's chromium (a fixture)
from tests.firmware import fake_builder
from tests.http_wire import settings
from tests.registry import free_port
from tests.rollout_states import HELD, REASON, SWAPPED, WORKER_FLEET, populate, report
from tests.rollout_worker import RolloutWorker, rollout_worker
from tests.service import TOKEN, Harness

STATUS = "status-s3cret-7f1e"
OPERATOR = "operator-s3cret-90ab"
SHOWN = str(escape(REASON))  # as a page shows it


@dataclass
class Console:
    url: str
    worker: RolloutWorker

    def rollout(self, app: str = "fw") -> Rollout:
        found = self.worker.rollouts.current(app)
        assert found is not None
        return found

    def refused(self) -> int:
        """Requests the worker refused for their token."""
        return self.worker.worker.counters.snapshot().get("unauthorized", 0)

    def requests(self) -> int:
        """Requests the worker's HTTP server has received."""
        assert self.worker.transport is not None
        return self.worker.transport.stats()["requests"]


@contextmanager
def console_on(
    root: Path,
    worker_url: str,
    public: bool = False,
    status: str = STATUS,
    operator: str = OPERATOR,
) -> Iterator[str]:
    """The build service with the console; apps fw, sensor and gateway; delivery at
    ``worker_url`` with these tokens."""
    tokens = f"delivery:\n  status_tokens: [{status}]\n  operator_token: {operator}\n"
    harness = Harness(root, config_text(["fw"], worker_url, None, public) + tokens)
    fake_builder(root / "builders", "fake", BUILDER)
    (root / "fleet").mkdir()
    harness.commit({"VERSION": "1.0.0\n"})
    for app, names in (("fw", ["fw-0001", "fw-0107"]), ("sensor", ["s1"]), ("gateway", ["g1"])):
        (root / "fleet" / f"{app}.yaml").write_text(fleet_text(harness.remote_uri, app, names))
    with console(harness, root) as (url, _):
        yield url


def worker_settings(status: str = STATUS) -> HttpSettings:
    return settings(status_token=status, operator_token=OPERATOR)


@contextmanager
def running(root: Path, public: bool = False) -> Iterator[Console]:
    """The real worker in the states of tests/rollout_states.py, and the console reading it."""
    with rollout_worker(root / "worker", WORKER_FLEET, 0.0, worker_settings()) as w:
        populate(w, time.time())
        with console_on(root / "console", w.url, public) as url:
            yield Console(url, w)


def post(c: httpx.Client, path: str, data: dict[str, str]) -> httpx.Response:
    """A form post as the console's own page sends it."""
    return c.post(path, data=data, headers={"Origin": str(c.base_url).rstrip("/")})


def after(c: httpx.Client, answer: httpx.Response) -> str:
    """The page an operation redirected to (with its flash message)."""
    assert answer.status_code == 303, answer.text[:500]
    assert answer.headers["location"] == "/rollouts/fw"
    return c.get(answer.headers["location"]).text


def flash(html: str) -> str:
    found = re.search(r'data-flash="\w+">([^<]*)</p>', html)
    return found.group(1) if found else ""


def test_the_pages_show_the_workers_rollouts(tmp_path: Path) -> None:
    with running(tmp_path) as on, client(on.url) as c:
        overview = c.get("/rollouts").text
        detail = c.get("/rollouts/fw").text
        fragment = c.get("/rollouts/fw?fragment=staged").text
    fw = overview[overview.index('data-application="fw"') :]
    fw = fw[: fw.index("</li>")]
    assert "Rollout 3:" in fw and "1.4.2" in fw and "1.5.0" in fw
    assert 'data-rollout-state="paused"' in fw and SHOWN in fw and 'role="alert"' in fw
    assert "39 of 200 confirmed · 6 failed · wave 2 of 3 open · 5 held back" in fw
    assert 'data-rollout-state="running"' in overview  # sensor
    gateway = overview[overview.index('data-application="gateway"') :]
    gateway = gateway[: gateway.index("</li>")]
    assert "Rollout" not in gateway and "1 of 1 on it" in gateway  # no staged rollout: the plan
    # the detail: the reason prominently, counts per wave, held back, the operations
    assert f'role="alert" data-reason><strong>Paused:</strong> {SHOWN}</p>' in detail
    row = detail.split('data-wave="2"')[1].split("</tr>")[0]
    wave = dict(re.findall(r'data-count="(\w+)">(\d+)', row))
    assert wave == {"devices": "50", "pending": "3", "downloading": "3", "swapped": "4",
                    "confirmed": "34", "failed": "6"}  # fmt: skip
    assert "5 reverted · 1 timed out" in detail
    assert 'aria-label="Wave 2: 34 of 50 devices confirmed"' in detail
    assert "needs promote" in detail.split('data-wave="3"')[1].split("</tr>")[0]
    assert [h for h in re.findall(r'data-held="([^"]+)"', detail)] == HELD
    assert detail.count('aria-label="Retry fw-0') == 5
    actions = re.findall(r'action="/rollouts/fw/(\w+)"', detail)
    assert sorted(set(actions)) == ["abort", "promote", "resume", "retry", "rollback", "start"]
    assert "Roll back to 1.4.2" in detail and "Promote: open the next wave" in detail
    history = re.findall(r'<tr data-rollout="(\d+)">', detail)
    assert history == ["2", "1"]
    assert "Devices by version" in detail and 'href="/devices/fw/fw-0107"' in detail
    # by default the devices are shown against the rollout's target, not against whichever
    # version delivery served last (during a rollout that flips with every poll)
    assert "rollout 3's target (1.5.0)</option>" in detail
    assert '<h3 id="rollout-summary">Version <span class="version">1.5.0</span>' in detail
    # a group shows its first GROUP_ROWS devices and says where the rest are, so a big
    # fleet's page stays small (and its 2 s live refresh cheap)
    groups = detail.split('id="plan-title"')[1].split('id="history-title"')[0]
    counts = [
        int(n)
        for n in re.findall(r'<h3 id="group-\d">\w[\w ]*<span class="muted">\((\d+)\)', groups)
    ]
    assert sum(counts) == 200 and max(counts) > 50, counts
    assert groups.count("<tr data-device=") == sum(min(n, 50) for n in counts)
    more = [int(n) for n in re.findall(r'data-more="(\d+)"', groups)]
    assert more == [n - 50 for n in counts if n > 50]
    assert groups.count("every device of fw</a>") == len(more)
    assert fragment.lstrip().startswith("<section") and SHOWN in fragment
    for page in (overview, detail, fragment):  # neither token reaches a page
        assert STATUS not in page and OPERATOR not in page
    # the worker answered every read: the status token (it refuses the operator's for reads)
    assert on.refused() == 0


def test_operations_reach_the_worker_with_the_operator_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with running(tmp_path) as on, client(on.url) as c:
        revision = on.rollout().revision
        page = after(c, post(c, "/rollouts/fw/resume", {"seq": "3"}))
        assert flash(page) == "Resume: rollout 3 of fw is running now."
        assert 'data-rollout-state="running"' in page and SHOWN not in page
        assert flash(c.get("/rollouts/fw").text) == ""  # shown once
        assert 'name="reason"' in page  # running: pause is offered now, with a reason
        why = "field report: <b>boot loop</b> on rev C boards"
        page = after(c, post(c, "/rollouts/fw/pause", {"seq": "3", "reason": why, "device": "x"}))
        assert "<b>boot loop</b>" not in page
        assert "<strong>Paused:</strong> field report: &lt;b&gt;boot loop&lt;/b&gt;" in page
        assert on.rollout().reason == why  # the reason went, the device did not (a 400)
        page = after(c, post(c, "/rollouts/fw/retry", {"device": "fw-0112"}))
        assert flash(page) == "Retry: fw-0112 of fw is offered 1.5.0 again."
        assert "fw-0112" not in re.findall(r'data-held="([^"]+)"', page)
        log = on.worker.store.records("fw", 3)
        assert [(d, r.outcome) for _, d, r in log if r.outcome is Outcome.RETRIED] == [
            ("fw-0112", Outcome.RETRIED)
        ]
        page = after(c, post(c, "/rollouts/fw/promote", {"seq": "3"}))
        assert 'data-wave="3"' in page and "wave 3 of 3 open" in c.get("/rollouts").text
        page = after(c, post(c, "/rollouts/fw/rollback", {"seq": "3"}))
        assert 'data-rollout-state="rolled_back"' in page
        assert "rolled back by an operator" in page
        audited = c.get("/api/v1/audit").json()["items"]  # the audit log, newest first
        done = on.rollout()
        refused = on.refused()
    assert [(e["action"], e["outcome"], e["target"]) for e in audited] == [
        ("rollout.rollback", "ok", ""),
        ("rollout.promote", "ok", ""),  # how a manual wave is approved
        ("rollout.retry", "ok", "fw-0112"),
        ("rollout.pause", "ok", ""),
        ("rollout.resume", "ok", ""),
    ]
    assert {(e["application"], e["via"], e["client"]) for e in audited} == {
        ("fw", "console", "127.0.0.1")
    }
    assert all(e["actor"].startswith("token:") for e in audited)
    assert OPERATOR not in str(audited) and TOKEN not in str(audited)
    assert audited[4]["detail"] == "Resume: rollout 3 of fw is running now."
    # the worker did each once, with the operator token: resume, pause, promote and rollback
    # each saved rollout 3 once (retry writes the device's outcome); nothing was refused
    assert (done.seq, done.state, done.wave, done.revision) == (
        3, State.ROLLED_BACK, 2, revision + 4,
    )  # fmt: skip
    assert refused == 0
    assert "console: rollout operation resume on 'fw': Resume: rollout 3 of fw" in caplog.text
    assert OPERATOR not in caplog.text and STATUS not in caplog.text


def test_start_a_rollout_from_the_detail_page(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "delivery.rollouts")
    with running(tmp_path) as on, client(on.url) as c:
        page = c.get("/rollouts/fw").text
        form = page[page.index('action="/rollouts/fw/start"') :]
        form = form[: form.index("</form>")]
        assert 'name="version" required' in form and 'name="seq" value="3"' in form
        assert 'name="supersede" value="1"> Replace rollout 3 (paused)' in form
        # refused by the worker while rollout 3 is paused: its own words, nothing changed
        page = after(c, post(c, "/rollouts/fw/start", {"seq": "3", "version": "1.4.1"}))
        assert flash(page) == (
            "Start refused: cannot start a rollout of &#39;fw&#39; to 1.4.1: rollout 3 (1.4.2"
            " -&gt; 1.5.0) is paused; abort it first, or start with supersede (body"
            " {&#34;supersede&#34;: true}, --supersede)"
        )
        missing = {"seq": "3", "version": "9.9", "supersede": "1"}
        page = after(c, post(c, "/rollouts/fw/start", missing))
        assert flash(page).startswith("Start refused: version &#39;9.9&#39; of &#39;fw&#39; is")
        # a version that is no tag: explained, and nothing is sent
        bad = post(c, "/rollouts/fw/start", {"seq": "3", "version": "../1.4.1"})
        assert bad.status_code == 400 and "start needs the version to roll out" in bad.text
        assert post(c, "/rollouts/fw/start", {"seq": "3"}).status_code == 400
        # the downgrade, replacing the paused rollout
        wanted = {"seq": "3", "version": "1.4.1", "supersede": "1"}
        page = after(c, post(c, "/rollouts/fw/start", wanted))
        assert flash(page) == "Start: rollout 4 of fw, 1.4.2 → 1.4.1, is running now."
        assert "Rollout 4:" in page and 'data-rollout-state="running"' in page
        history = page[page.index('id="history-title"') :]
        assert re.findall(r'<tr data-rollout="(\d+)">', history) == ["3", "2", "1"]
        assert "superseded by rollout 4 to 1.4.1, started by an operator" in history
        # a form drawn for rollout 3 does not start yet another one
        page = after(c, post(c, "/rollouts/fw/start", wanted))
        assert "Start not sent: the page showed rollout 3 of fw, and rollout 4" in flash(page)
        audited = c.get("/api/v1/audit", params={"action": "rollout.start"}).json()["items"]
        stored = on.worker.store.history("fw")
    assert [e["outcome"] for e in audited] == ["refused", "ok", "refused", "refused"]
    assert "1.4.2 → 1.4.1" in audited[1]["detail"]
    # the worker started one rollout, superseding rollout 3; the refusals changed nothing
    assert [(r.seq, r.from_version, r.to_version, r.state, r.reason) for r in stored[2:]] == [
        (3, "1.4.2", "1.5.0", State.SUPERSEDED,
         "superseded by rollout 4 to 1.4.1, started by an operator"),
        (4, "1.4.2", "1.4.1", State.RUNNING, "started by an operator"),
    ]  # fmt: skip
    started = [r.getMessage() for r in caplog.records if "started by an operator" in r.getMessage()]
    assert started == ["rollout fw/4: 1.4.2 -> 1.4.1 started by an operator"]


def test_refusals_are_flash_messages_never_tracebacks(tmp_path: Path) -> None:
    with running(tmp_path) as on, client(on.url) as c:
        revision = on.rollout().revision
        # the worker's 409: the state forbids it (the model's own words)
        page = after(c, post(c, "/rollouts/fw/pause", {"seq": "3"}))
        assert flash(page) == (
            "Pause refused: cannot pause rollout 3 of &#39;fw&#39;: it is paused, and pause"
            " needs it running"
        )
        assert 'role="alert" data-flash="bad"' in page
        # a page showing an older rollout does not operate the newer one
        page = after(c, post(c, "/rollouts/fw/abort", {"seq": "2"}))
        assert "the page showed rollout 2 of fw, and rollout 3 has started since" in flash(page)
        refused = c.get("/api/v1/audit").json()["items"]
        assert [(e["action"], e["outcome"]) for e in refused] == [
            ("rollout.abort", "refused"),
            ("rollout.pause", "refused"),
        ]
        assert "it is paused, and pause needs it running" in refused[1]["detail"]
        assert (on.rollout().state, on.rollout().revision) == (State.PAUSED, revision)
        # bad forms: a page that explains, and nothing is sent
        received = on.requests()
        bad = post(c, "/rollouts/fw/explode", {})
        assert bad.status_code == 400 and "not a rollout operation" in bad.text
        assert post(c, "/rollouts/fw/retry", {}).status_code == 400
        long = post(c, "/rollouts/fw/pause", {"reason": "x" * 600})
        assert long.status_code == 400 and "at most 512" in long.text
        assert (on.requests(), on.rollout().revision) == (received, revision)
        # the worker, restarted with a rotated operator token, refuses the console's
        on.worker.serve(operator_token="another")
        page = after(c, post(c, "/rollouts/fw/resume", {"seq": "3"}))
        assert "refused the operator token (HTTP 401)" in flash(page)
        assert "delivery.operator_token" in flash(page) and OPERATOR not in page
        assert (on.rollout().state, on.refused()) == (State.PAUSED, 1)
    gone = f"http://127.0.0.1:{free_port()}"  # a worker that is gone
    with console_on(tmp_path / "gone", gone) as url, client(url) as c:
        shown = c.get("/rollouts/fw")
        assert shown.status_code == 200 and "Delivery unreachable" in shown.text
        page_text = after(c, post(c, "/rollouts/fw/pause", {}))
        assert flash(page_text).startswith("Pause refused: cannot reach http://127.0.0.1:")
        assert "Traceback" not in page_text


def test_operations_need_a_token_and_the_consoles_own_pages(tmp_path: Path) -> None:
    with running(tmp_path, public=True) as on:
        revision = on.rollout().revision
        with client(on.url, token=None) as anon:
            page = anon.get("/rollouts/fw").text
            assert SHOWN in page and "Sign in</a> to pause, resume" in page
            assert 'action="/rollouts/fw/' not in page  # no operation buttons
            received = on.requests()
            refused = post(anon, "/rollouts/fw/resume", {"seq": "3"})
            assert refused.status_code == 401 and 'name="token"' in refused.text
            assert "Sign in with an API token to operate rollouts" in refused.text
        with client(on.url) as c:
            other = c.post("/rollouts/fw/resume", headers={"Origin": "https://evil.example"})
            assert other.status_code == 403 and "another site" in other.text
            fetch = c.post("/rollouts/fw/abort", headers={"Sec-Fetch-Site": "cross-site"})
            assert fetch.status_code == 403
        # nothing reached the worker: rollout 3 is as it was
        assert (on.requests(), on.refused()) == (received, 0)
        assert (on.rollout().state, on.rollout().revision) == (State.PAUSED, revision)


OLDER_ROWS = [
    {"application": "fw", "device": "fw-0001", "current": "1.5.0", "target": "1.5.0",
     "state": "Synced", "source": "container", "lastSeen": 1_700_000_000.0},
    {"application": "fw", "device": "fw-0107", "current": "1.4.2", "target": "1.4.2",
     "state": "Synced", "source": "container", "lastSeen": 1_700_000_000.0},
]  # fmt: skip


def test_an_older_worker_without_the_rollout_api(tmp_path: Path) -> None:
    """A worker from before the rollout API (the console and the worker are upgraded
    separately): it answers /v1/status, and 404 for /v1/rollouts. Today's worker always has
    the API, so this is the explicit stand-in of tests/console_app.py (``stub_delivery``)
    limited to /v1/status."""
    with (
        stub_delivery(OLDER_ROWS, paths=("/v1/status",)) as older,
        console_on(tmp_path, older) as url,
        client(url) as c,
    ):
        overview = c.get("/rollouts").text
        detail = c.get("/rollouts/fw").text
    assert "Rollouts unavailable" not in overview and "Rollout 3" not in overview
    assert "1 of 2 on it" in overview  # the build side's plan, from /v1/status
    assert "runs no staged rollout of fw (it has no rollout API)" in detail
    assert 'action="/rollouts/fw/' not in detail


def test_a_refused_status_token_is_explained(tmp_path: Path) -> None:
    with rollout_worker(tmp_path / "worker", WORKER_FLEET, time.time(),
                        worker_settings(status="other-token")) as w:  # fmt: skip
        with console_on(tmp_path / "console", w.url) as url, client(url) as c:
            page = c.get("/rollouts/fw").text
        refused = w.worker.counters.snapshot().get("unauthorized", 0)
    assert "refused the status token (HTTP 401)" in page and STATUS not in page
    assert refused >= 1


@pytest.mark.slow
def test_a_rollout_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    with running(tmp_path) as on:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        try:
            t = Tab(context.new_page(), on.url)
            t.sign_in()
            t.open("/rollouts")
            fw = t.page.locator("li[data-application=fw]")
            expect(fw.get_by_role("alert")).to_contain_text(REASON)
            t.shoot("rollouts")

            t.open("/rollouts/fw")
            expect(t.page.get_by_role("alert")).to_have_text(f"Paused: {REASON}")
            row = t.page.locator("tr[data-wave='2']")
            expect(row.locator("[data-count=confirmed]")).to_have_text("34")
            t.shoot("rollout-detail")
            t.page.evaluate("window.stayedOnPage = true")
            for name in SWAPPED[:2]:  # two swapped devices come back on 1.5.0
                assert isinstance(report(on.worker, "fw", name, "1.5.0"), Sync)
            expect(row.locator("[data-count=confirmed]")).to_have_text("36", timeout=LONG)
            expect(row.locator("[data-count=swapped]")).to_have_text("2")
            assert t.page.evaluate("window.stayedOnPage") is True  # live, no reload

            t.page.get_by_role("button", name="Resume").click()
            expect(t.page.locator("[data-flash=ok]")).to_have_text(
                "Resume: rollout 3 of fw is running now."
            )
            assert t.page.get_by_role("alert").count() == 0
            # a half-typed reason survives the live updates
            reason = t.page.get_by_label("Why pause (optional)")
            reason.fill("rev C boards reboot")
            for name in SWAPPED[2:]:
                assert isinstance(report(on.worker, "fw", name, "1.5.0"), Sync)
            t.page.wait_for_timeout(3 * 2000)
            assert reason.input_value() == "rev C boards reboot"
            t.page.get_by_role("button", name="Pause").click()
            expect(t.page.get_by_role("alert")).to_have_text("Paused: rev C boards reboot")
            expect(t.page.locator("tr[data-wave='2'] [data-count=confirmed]")).to_have_text("38")

            t.page.get_by_role("button", name="Retry fw-0107").click()
            expect(t.page.locator("[data-flash=ok]")).to_contain_text("Retry: fw-0107")
            assert t.page.locator("[data-held='fw-0107']").count() == 0

            on.worker.publish("fw", "1.5.1")  # a newer version: a device's status starts
            on.worker.clock.now += 1  # rollout 4 once the worker looks again
            report(on.worker, "fw", "fw-0001", "1.5.0")
            assert (on.rollout().seq, on.rollout().to_version) == (4, "1.5.1")
            t.page.get_by_role("button", name="Abort").click()  # on a page that showed 3
            expect(t.page.locator("[data-flash=bad]")).to_contain_text(
                "rollout 4 has started since"
            )
            assert t.text("#staged h2").startswith("Rollout 4:")
            assert t.errors == [] and t.dialogs == []
        finally:
            context.close()


@pytest.mark.slow
def test_rollout_pages_fit_a_phone_and_operate_without_javascript(
    browser: Browser, tmp_path: Path
) -> None:
    with running(tmp_path) as on:
        phone = browser.new_context(viewport={"width": 375, "height": 740})
        plain = browser.new_context(java_script_enabled=False)
        try:
            t = Tab(phone.new_page(), on.url)
            t.sign_in()
            for path in ("/rollouts", "/rollouts/fw", "/rollouts/sensor"):
                t.open(path)
                width = t.page.evaluate("document.documentElement.scrollWidth")
                assert width <= 375, (path, width)
            assert t.errors == []
            t = Tab(plain.new_page(), on.url)
            t.sign_in()
            t.open("/rollouts/fw")
            t.page.get_by_role("button", name="Resume").click()
            expect(t.page.locator("[data-flash=ok]")).to_have_text(
                "Resume: rollout 3 of fw is running now."
            )
            assert on.rollout().state is State.RUNNING
        finally:
            phone.close()
            plain.close()


def test_a_closed_port_is_not_a_worker() -> None:
    found = staged.fetch(f"http://127.0.0.1:{free_port()}", "fw", "tok")
    assert found.error.startswith("cannot reach") and "tok" not in found.error
    answer = staged.operate(f"http://user:pw@127.0.0.1:{free_port()}", "fw",
                            RolloutAction.PAUSE, "tok")  # fmt: skip
    assert answer.error.startswith("cannot reach http://***@127.0.0.1:")
