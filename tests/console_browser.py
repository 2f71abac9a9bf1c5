"""A real browser for the console tests: Debian's chromium through Playwright (a
module-scoped fixture) and ``Tab``, a page that records console errors and dialogs and
writes docs/img screenshots with ``AJOUR_UPDATE_SCREENSHOTS=1``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright

from tests.conftest import REPO
from tests.service import TOKEN

CHROMIUM = "/usr/bin/chromium"
NOTE = "Failed to load resource: the server responded with a status of"
SHOTS = REPO / "docs" / "img"


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
