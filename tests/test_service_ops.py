"""The build service as a platform: ``GET /metrics``, the audit log, and retention.

Real uvicorn, real git remote, host-mode fake builder publishing to a real OCI layout,
signed webhooks; the metrics are scraped and parsed with prometheus_client's parser.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ajour_build.core.artifact.layout_store import LayoutStore
from tests.firmware import fake_builder
from tests.service import BUILDER, SECRET, TOKEN, Harness, github_push
from tests.test_service import APPS

CONFIG = f"""\
allowed_applications: [fw, plain]
sources: {{allow_local: true}}
service:
  tokens: [{TOKEN}, other-token]
  runner: host
  publish_to: "oci-layout://LAYOUT"
  webhooks: {{github: {SECRET}}}
  retention: RETENTION
"""
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def make(tmp_path: Path, retention: str = "{interval: 0s}") -> Harness:
    text = CONFIG.replace("LAYOUT", str(tmp_path / "layout")).replace("RETENTION", retention)
    h = Harness(tmp_path, text)
    fake_builder(tmp_path / "builders", "fake", BUILDER)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "fleet.yaml").write_text(APPS.format(uri=h.remote_uri))
    return h


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make(tmp_path)
    with harness.running():
        yield harness


def scrape(h: Harness, token: str | None = TOKEN) -> Samples:
    with h.client(token) as c:
        reply = c.get("/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def pushed(h: Harness, text: str) -> dict[str, object]:
    before, after = h.commit({"main.c": text})
    return github_push(h.remote_uri, "refs/heads/main", before, after)


def audit(h: Harness, **params: str) -> list[dict[str, str]]:
    with h.client() as c:
        reply = c.get("/api/v1/audit", params=params)
    assert reply.status_code == 200, reply.text
    items: list[dict[str, str]] = reply.json()["items"]
    return items


# -- metrics -----------------------------------------------------------------------------


def test_metrics_after_real_builds_and_webhooks(h: Harness) -> None:
    with h.client(None) as c:
        assert c.get("/metrics").status_code == 401
    empty = scrape(h)
    assert empty[("ajour_build_queue_depth", ())] == 0
    assert empty[("ajour_build_last_build_start_timestamp_seconds", ())] == 0
    payload = pushed(h, "int a;")
    reply = h.github(payload, delivery="d-1")
    assert reply.status_code == 202, reply.text
    (build,) = reply.json()["triggered"]
    assert h.github(payload, delivery="d-1").json()["duplicate"] is True
    assert h.github(payload, secret="wrong").status_code == 401
    assert h.github({}, event="ping").status_code == 200
    done = h.wait(build["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done
    with h.client() as c:  # two more by the API: fw/d2 builds branch beta, which is not there
        second = c.post("/api/v1/applications/fw/trigger", json={"version": "2.0.0"}).json()
    ends = [h.wait(b["id"], ("succeeded", "failed"))["state"] for b in second["triggered"]]
    assert sorted(ends) == ["failed", "succeeded"]
    got = scrape(h)

    def hooks(outcome: str) -> float:
        return got[("ajour_build_webhooks_total", (("outcome", outcome), ("provider", "github")))]

    outcomes = ("accepted", "deduplicated", "bad_signature", "ignored", "invalid")
    assert [hooks(o) for o in outcomes] == [1, 1, 1, 1, 0]
    gitlab = (("outcome", "accepted"), ("provider", "gitlab"))
    assert got[("ajour_build_webhooks_total", gitlab)] == 0
    state = {
        s: got[("ajour_build_builds_total", (("state", s),))]
        for s in ("queued", "running", "succeeded", "failed")
    }
    assert state == {"queued": 3, "running": 3, "succeeded": 2, "failed": 1}
    assert got[("ajour_build_builds_active", (("state", "running"),))] == 0
    assert got[("ajour_build_queue_depth", ())] == 0
    hist = "ajour_build_build_duration_seconds"
    assert got[(f"{hist}_count", (("outcome", "succeeded"),))] == 2
    assert got[(f"{hist}_bucket", (("le", "+Inf"), ("outcome", "succeeded")))] == 2
    assert got[(f"{hist}_sum", (("outcome", "succeeded"),))] > 0
    assert got[(f"{hist}_count", (("outcome", "failed"),))] == 1
    assert got[("ajour_build_trigger_latency_seconds_count", ())] == 3
    publish = "ajour_build_publish_duration_seconds"
    assert got[(f"{publish}_count", (("outcome", "succeeded"),))] == 2
    started = got[("ajour_build_last_build_start_timestamp_seconds", ())]
    assert time.time() - 120 < started <= time.time()


def test_metrics_registries_are_per_app_and_public_reads_open_them(tmp_path: Path) -> None:
    first = make(tmp_path / "a")
    second = make(tmp_path / "b")
    with first.running(open_access=True), second.running():
        assert first.github({}, event="ping").status_code == 200
        a, b = scrape(first, None), scrape(second)
    key = ("ajour_build_webhooks_total", (("outcome", "ignored"), ("provider", "github")))
    assert (a[key], b[key]) == (1, 0)


# -- the audit log -------------------------------------------------------------------------


def test_triggers_cancels_and_webhooks_are_audited_without_the_token(h: Harness) -> None:
    reply = h.github(pushed(h, "int b;"))
    assert reply.status_code == 202
    (hooked,) = reply.json()["triggered"]
    with h.client() as c:
        triggered = c.post("/api/v1/applications/fw/devices/d2/trigger").json()
        refused = c.post("/api/v1/applications/rogue/trigger")
        built = triggered["triggered"][0]["id"]
        cancelled = c.post(f"/api/v1/builds/{built}/cancel").json()
    assert refused.status_code == 403
    with h.client(None) as c:
        assert c.get("/api/v1/audit").status_code == 401
    entries = audit(h)
    raw = json.dumps(entries)
    assert TOKEN not in raw and "other-token" not in raw
    token_id = "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    newest = [(e["action"], e["application"], e["outcome"], e["via"]) for e in entries]
    assert newest == [
        ("cancel", "fw", "ok", "api"),
        ("trigger", "rogue", "refused", "api"),
        ("trigger", "fw", "ok", "api"),
        ("trigger", "fw", "ok", "webhook"),
    ]
    cancel, rogue, trigger, webhook = entries
    assert cancel["target"] == built and cancel["actor"] == token_id
    assert cancel["detail"].startswith(cancelled["state"])
    assert cancel["client"] == "127.0.0.1"
    assert "allowed_applications" in rogue["detail"] and rogue["actor"] == token_id
    assert trigger["target"] == built
    assert webhook["actor"] == f"webhook github {h.remote_uri}"
    assert webhook["target"] == hooked["id"] and "1 build(s) queued" in webhook["detail"]
    assert [e["action"] for e in audit(h, action="cancel")] == ["cancel"]
    assert [e["application"] for e in audit(h, application="rogue")] == ["rogue"]
    assert audit(h, since="2999-01-01") == []
    with h.client() as c:
        bad = c.get("/api/v1/audit", params={"action": "delete"})
    assert bad.status_code == 422 and "'trigger', 'cancel'" in bad.text


def test_console_actions_are_audited_and_the_page_needs_a_token(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.config_text = h.config_text.replace("runner: host\n", "runner: host\n  public_read: true\n")
    with h.running():
        with httpx.Client(base_url=h.url, timeout=30) as c:
            page = c.get("/audit", headers={"Accept": "text/html"})
            assert page.status_code == 401 and "names tokens" in page.text  # public reads: no
            c.cookies.set("ajour_token", TOKEN)
            posted = c.post("/actions/trigger", data={"application": "fw", "device": "d1"})
            assert posted.status_code == 303, posted.text
            build = posted.headers["location"].rsplit("/", 1)[1]
            assert c.post(f"/builds/{build}/cancel").status_code == 303
            page = c.get("/audit")
            filtered = c.get("/audit", params={"action": "cancel"})
            wrong = c.get("/audit", params={"since": "forever"})
        entries = audit(h)
    assert [(e["action"], e["via"], e["target"]) for e in entries] == [
        ("cancel", "console", build),
        ("trigger", "console", build),
    ]
    assert page.status_code == 200 and page.text.count("<tr data-audit=") == 2
    assert TOKEN not in page.text and "token:" in page.text
    assert filtered.text.count("<tr data-audit=") == 1
    assert wrong.status_code == 400 and "since is one of 1h" in wrong.text


# -- retention -----------------------------------------------------------------------------


def test_the_service_prunes_old_builds_and_their_directories(tmp_path: Path) -> None:
    h = make(tmp_path, "{max_builds: 1, keep_per_application: 0, interval: 1s}")
    h.commit({"main.c": "int c;"})
    trigger = "/api/v1/applications/fw/devices/d1/trigger"
    with h.running():
        with h.client() as c:
            first = c.post(trigger, json={"version": "1.0.0"}).json()
            one = h.wait(first["triggered"][0]["id"], ("succeeded", "failed"))
            assert one["state"] == "succeeded", one
            build_dir = tmp_path / "state" / "builds" / one["backendRef"]
            assert (build_dir / "build.log").is_file()
            second = c.post(trigger, json={"version": "1.1.0"}).json()
            two = h.wait(second["triggered"][0]["id"], ("succeeded", "failed"))
            deadline = time.monotonic() + 20
            while c.get(f"/api/v1/builds/{one['id']}").status_code != 404:
                assert time.monotonic() < deadline, "the first build was never pruned"
                time.sleep(0.2)
            assert c.get(f"/api/v1/builds/{two['id']}").status_code == 200
            assert c.get(f"/api/v1/builds/{one['id']}/log-lines").status_code == 404
    assert not build_dir.exists()
    assert (tmp_path / "state" / "builds" / two["backendRef"] / "build.log").is_file()
    # what was published stays: retention is about records, not firmware
    store = LayoutStore(tmp_path / "layout" / "fw")
    assert store.inspect("1.0.0").version == "1.0.0"


def test_a_scrape_with_the_records_gone_is_a_503_that_says_why(tmp_path: Path) -> None:
    h = make(tmp_path)
    with h.running():
        assert h.service is not None
        h.service.records.engine.dispose()
        (tmp_path / "state" / "service").rename(tmp_path / "state" / "moved")
        with h.client() as c:
            reply = c.get("/metrics")
        (tmp_path / "state" / "moved").rename(tmp_path / "state" / "service")
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"].startswith("build records unavailable")
