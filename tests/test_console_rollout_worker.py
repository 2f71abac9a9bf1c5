"""The console's rollout page over a real delivery worker: a rollout that its criteria
paused shows the reason, and the console resumes and pauses it with the operator token.

The worker is the real one (``Worker`` with ``Rollouts`` on a SQLite file, served by
``HttpTransport`` on loopback with the status and operator tokens, as in
tests/test_rollout_api.py); its devices are simulated and its rollout clock is a test clock.
The console reads and operates it over HTTP, in chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from markupsafe import escape
from playwright.sync_api import Browser, expect

from ajour_build.core.rollout.assignment import wave_of
from ajour_build.core.rollout.model import State
from delivery.device import SimulatedDevice
from tests.console_browser import Tab
from tests.console_browser import browser as browser  # the module's chromium (a fixture)
from tests.http_wire import STATUS_TOKEN, settings
from tests.rollout_worker import RolloutWorker, rollout_worker
from tests.test_console_rollouts import console_on

OPERATOR_TOKEN = "operator-secret-e2e"
NAMES = [f"d{i}" for i in range(10)]
FLEET = (
    "kind: Application\nmetadata: {name: app}\n"
    "spec:\n  firmware: {container: {image: fw/app:latest}}\n"
    "  rollout:\n"
    "    waves: [{percent: 50, dwell: 1h}, {percent: 100, dwell: 1h, approval: manual}]\n"
    "    criteria: [{outcome: reverted, threshold: 0.2, minFinished: 3}]\n"
    + "".join(f"---\nmetadata: {{name: {n}, application: app}}\n" for n in NAMES)
)


class Fleet:
    """The worker's devices; ``rounds`` lets every device poll until it settles."""

    def __init__(self, w: RolloutWorker) -> None:
        self.w, self.worker = w, w.worker
        self.devices = {n: SimulatedDevice(b"1.0") for n in NAMES}

    def rounds(self, count: int = 1) -> None:
        for _ in range(count):
            self.w.clock.now += 0.6  # past the refresh interval (0.5 s), not the dwell (1 h)
            for name, device in self.devices.items():
                for _ in range(40):
                    self.w.handle("app", name, device)
                    if device.synced:
                        break
                device.synced = False


@contextmanager
def worker(root: Path) -> Iterator[tuple[Fleet, str]]:
    http = settings(operator_token=OPERATOR_TOKEN)
    with rollout_worker(root, FLEET, 1_000_000.0, http) as w:
        w.publish("app", "1.0", b"\x01" * 1500)
        yield Fleet(w), w.url


def first_wave(fleet: Fleet) -> list[str]:
    policy = fleet.worker.targets.fleet.applications["app"].rollout
    assert policy is not None
    return sorted(n for n in NAMES if wave_of(policy, "app", n) == 0)


@pytest.mark.slow
def test_a_real_workers_paused_rollout_is_resumed_and_paused_in_the_console(
    browser: Browser, tmp_path: Path
) -> None:
    with worker(tmp_path / "worker") as (fleet, worker_url):
        fleet.rounds()  # 1.0 is the baseline
        fleet.w.publish("app", "1.1", b"\x02" * 1500)
        members = first_wave(fleet)
        assert 3 <= len(members) <= 9, "the fixture needs a first wave of 3 to 9 devices"
        for name in members[:2]:
            fleet.devices[name].revert = True  # their bootloaders roll 1.1 back
        fleet.rounds(3)
        rollouts = fleet.worker.rollouts
        assert rollouts is not None
        paused = rollouts.current("app")
        assert paused is not None and paused.state is State.PAUSED, paused
        reason = paused.reason
        assert reason.startswith(f"wave 1: 2 of {len(members)} finished devices reverted")

        with console_on(tmp_path / "console", worker_url, status=STATUS_TOKEN,
                        operator=OPERATOR_TOKEN) as url:  # fmt: skip
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            try:
                t = Tab(context.new_page(), url)
                t.sign_in()
                t.open("/rollouts")
                card = t.page.locator("li[data-application=app]")
                expect(card.get_by_role("alert")).to_have_text(f"Paused: {reason}")
                t.open("/rollouts/app")
                expect(t.page.get_by_role("alert")).to_have_text(f"Paused: {reason}")
                assert t.text("#staged h2") == "Rollout 2: 1.0 → 1.1"
                wave = t.page.locator("tr[data-wave='1']")
                assert wave.locator("[data-count=failed]").inner_text().startswith("2")
                held = t.page.locator("[data-held]").all_inner_texts()
                assert [h.split()[0] for h in held] == members[:2]

                t.page.get_by_role("button", name="Resume").click()
                expect(t.page.locator("[data-flash=ok]")).to_have_text(
                    "Resume: rollout 2 of app is running now."
                )
                current = rollouts.current("app")
                assert current is not None and current.state is State.RUNNING

                t.page.get_by_label("Why pause (optional)").fill("hold for the <b>field</b> test")
                t.page.get_by_role("button", name="Pause").click()
                expect(t.page.get_by_role("alert")).to_have_text(
                    "Paused: hold for the <b>field</b> test"
                )
                current = rollouts.current("app")
                assert current is not None and current.state is State.PAUSED
                assert current.reason == "hold for the <b>field</b> test"

                assert t.page.get_by_role("button", name="Pause").count() == 0
                html = t.page.content()
                assert str(escape("<b>field</b>")) in html
                assert OPERATOR_TOKEN not in html and STATUS_TOKEN not in html
                assert t.errors == [] and t.dialogs == []
            finally:
                context.close()
