"""The web console over HTTP, no browser: tokens and cookies, refusals as pages, escaping of
what delivery and devices report, bad input never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ajour_build.console import devices, views
from ajour_build.core.wire import DeviceReport, read_reports
from ajour_build.service.backends.backend import QueueFull
from tests.console_app import EVIL, client, lite, stub_delivery
from tests.registry import free_port
from tests.service import TOKEN

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
API_PATHS = ("/api/", "/webhooks/", "/healthz", "/readyz", "/metrics")


# -- the console over HTTP (no browser) ---------------------------------------------------


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
