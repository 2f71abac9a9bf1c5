"""The build service over real HTTP: webhooks, the REST API, auth, the queue, restarts.

Builds run in host mode with a fake builder script against a real git remote, so a
test is about the service, not about compilers (tests/test_service_flow.py builds
real firmware).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ajour_build.lifecycle import Build, BuildState
from ajour_build.service.records import Records
from tests.firmware import fake_builder
from tests.service import BUILDER, SECRET, TOKEN, Harness, github_push, gitlab_push

APPS = """\
kind: Application
metadata: {{name: fw}}
spec:
  firmware:
    container:
      image: fw:latest
      build:
        image: fake
        source: {{git: {{uri: "{uri}", rev: main}}}}
        artifact: {{path: out/fw.bin}}
---
metadata: {{name: d1, application: fw}}
---
metadata: {{name: d2, application: fw}}
spec:
  firmware:
    container:
      image: fw:beta
      build:
        image: fake
        source: {{git: {{uri: "{uri}", rev: beta}}}}
        artifact: {{path: out/fw.bin}}
---
kind: Application
metadata: {{name: rogue}}
spec:
  firmware:
    container:
      image: rogue:latest
      build:
        image: fake
        source: {{git: {{uri: "{uri}/", rev: main}}}}
---
kind: Application
metadata: {{name: plain}}
spec:
  firmware:
    container: {{image: plain:latest}}
"""
CONFIG = f"""\
allowed_applications: [fw, plain]
sources: {{allow_local: true}}
service:
  tokens: [{TOKEN}, other-token]
  runner: host
  publish: false
  queue_size: QUEUE
  webhooks: {{github: {SECRET}, gitlab: {SECRET}-gl, gitea: {SECRET}-gt}}
"""


def make(tmp_path: Path, queue: int = 16) -> Harness:
    h = Harness(tmp_path, CONFIG.replace("QUEUE", str(queue)))
    fake_builder(tmp_path / "builders", "fake", BUILDER)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "fleet.yaml").write_text(APPS.format(uri=h.remote_uri))
    return h


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make(tmp_path)
    with harness.running():
        yield harness


def push(
    h: Harness, files: dict[str, str] | None = None, branch: str = "main"
) -> dict[str, object]:
    before, after = h.commit(files or {"main.c": f"int x = {id(files)};\n"}, branch)
    return github_push(h.remote_uri, f"refs/heads/{branch}", before, after)


# -- webhooks ----------------------------------------------------------------------------


def test_push_builds_matching_app_and_collapses_identical_specs(h: Harness) -> None:
    reply = h.github(push(h))
    assert reply.status_code == 202, reply.text
    body = reply.json()
    # fw (app) and fw/d1 share one spec; fw/d2 builds "beta"; rogue is refused
    assert [b["consumers"] for b in body["triggered"]] == [["fw", "fw/d1"]]
    assert len(body["refused"]) == 1 and "'rogue'" in body["refused"][0]
    assert "allowed_applications" in body["refused"][0]
    done = h.wait(body["triggered"][0]["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done
    assert done["git"]["commit"] == h.remote.commit("main").hexsha
    with h.client() as c:
        log = c.get(f"/api/v1/builds/{done['id']}/logs").text
    assert f"at {done['git']['commit']}" in log and "done" in log


def test_push_to_other_branch_builds_only_that_device(h: Harness) -> None:
    h.commit({"a": "1"}, "main")
    reply = h.github(push(h, {"b": "2"}, "beta"))
    assert reply.status_code == 202
    assert [b["consumers"] for b in reply.json()["triggered"]] == [["fw/d2"]]


def test_gitlab_token_and_payload(h: Harness) -> None:
    before, after = h.commit({"g": "1"})
    payload = json.dumps(gitlab_push(h.remote_uri, "refs/heads/main", before, after)).encode()
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "u-1"}
    with httpx.Client(base_url=h.url) as c:
        wrong = c.post(
            "/webhooks/gitlab", content=payload, headers=headers | {"X-Gitlab-Token": "x"}
        )
        good = c.post(
            "/webhooks/gitlab",
            content=payload,
            headers=headers | {"X-Gitlab-Token": f"{SECRET}-gl"},
        )
    assert wrong.status_code == 401 and "X-Gitlab-Token does not match" in wrong.json()["error"]
    assert good.status_code == 202, good.text
    assert good.json()["triggered"][0]["consumers"] == ["fw", "fw/d1"]


def test_ping_and_other_events_answer_200(h: Harness) -> None:
    ping = h.github({"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert ping.status_code == 200 and ping.json()["explanation"] == "pong"
    issue = h.github({"action": "opened"}, event="issues")
    assert issue.status_code == 200 and "only pushes build" in issue.json()["explanation"]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda hd: hd.pop("X-Hub-Signature-256"), "X-Hub-Signature-256 is missing"),
        (lambda hd: hd.update({"X-Hub-Signature-256": "sha256=" + "0" * 64}), "does not match"),
        (lambda hd: hd.update({"X-Hub-Signature-256": "garbage"}), "does not match"),
    ],
)
def test_bad_or_missing_signature_is_refused(h: Harness, mangle: object, message: str) -> None:
    payload = json.dumps(push(h)).encode()
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=abc"}
    assert callable(mangle)
    mangle(headers)
    with httpx.Client(base_url=h.url) as c:
        reply = c.post("/webhooks/github", content=payload, headers=headers)
    assert reply.status_code == 401
    assert message in reply.json()["error"]
    with h.client() as c:
        assert c.get("/api/v1/builds").json()["count"] == 0


def test_replayed_delivery_and_replayed_body_are_deduplicated(h: Harness) -> None:
    payload = push(h)
    first = h.github(payload, delivery="d-1")
    assert first.status_code == 202 and len(first.json()["triggered"]) == 1
    again = h.github(payload, delivery="d-1")  # GitHub's "redeliver"
    replay = h.github(payload, delivery="d-2")  # a captured body with a fresh id
    for reply in (again, replay):
        assert reply.status_code == 200 and reply.json()["duplicate"] is True
        assert reply.json()["triggered"] == []
    with h.client() as c:
        assert c.get("/api/v1/builds").json()["count"] == 1


def test_a_delivery_being_handled_is_not_reported_as_handled(h: Harness) -> None:
    payload = push(h)
    assert h.service is not None
    records = h.service.records
    # another request holds the claim (it might still fail): this copy gets 409, not 200
    assert records.remember_delivery("github:id:d-9") == "new"
    busy = h.github(payload, delivery="d-9")
    assert busy.status_code == 409 and "being handled" in busy.json()["error"]
    # that request failed and let go of its claim: the redelivery builds
    records.forget_delivery("github:id:d-9")
    again = h.github(payload, delivery="d-9")
    assert again.status_code == 202 and len(again.json()["triggered"]) == 1
    assert h.github(payload, delivery="d-9").json()["duplicate"] is True


def test_non_json_and_oversized_bodies(h: Harness) -> None:
    bad = h.github({}, body=b"not json {")
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    big = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    with httpx.Client(base_url=h.url, timeout=30) as c:
        reply = c.post(
            "/webhooks/github",
            content=big,
            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=00"},
        )
    assert reply.status_code == 413 and "limit" in reply.json()["error"]


def test_push_for_a_branch_nobody_builds_explains(h: Harness) -> None:
    reply = h.github(push(h, {"x": "1"}, "feature/x"))
    assert reply.status_code == 202
    body = reply.json()
    assert body["triggered"] == [] and "'feature/x'" in body["explanation"]
    assert "source.git.rev" in body["explanation"]


def test_unknown_provider_and_unconfigured_secret(tmp_path: Path) -> None:
    harness = make(tmp_path)
    harness.config_text = harness.config_text.replace(f", gitea: {SECRET}-gt", "")
    with harness.running():
        with httpx.Client(base_url=harness.url) as c:
            gitea = c.post("/webhooks/gitea", content=b"{}", headers={"X-Gitea-Event": "push"})
            other = c.post("/webhooks/bitbucket", content=b"{}")
    assert gitea.status_code == 500 and "no webhook secret" in gitea.json()["error"]
    assert other.status_code == 422


# -- the REST API ------------------------------------------------------------------------


def test_api_needs_a_valid_token(h: Harness) -> None:
    for token in (None, "wrong", "api-token-"):
        with h.client(token) as c:
            reply = c.get("/api/v1/builds")
            assert reply.status_code == 401, token
            assert reply.headers["WWW-Authenticate"] == "Bearer"
            assert c.post("/api/v1/applications/fw/trigger").status_code == 401
    with h.client("other-token") as c:
        assert c.get("/api/v1/builds").status_code == 200
    with httpx.Client(base_url=h.url) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["backend"] == "local: ok"


def test_trigger_get_list_filter_and_logs(h: Harness) -> None:
    h.commit({"VERSION": "2.4.0\n"}, "main")
    h.commit({"VERSION": "2.5.0-beta.1\n"}, "beta")
    with h.client() as c:
        reply = c.post("/api/v1/applications/fw/devices/d2/trigger")
        assert reply.status_code == 202, reply.text
        d2 = reply.json()["triggered"][0]
        assert d2["consumers"] == ["fw/d2"]
        app = c.post("/api/v1/applications/fw/trigger", json={"version": "9.9.9"}).json()
        assert sorted(tuple(b["consumers"]) for b in app["triggered"]) == [
            ("fw", "fw/d1"),
            ("fw/d2",),
        ]
    done = h.wait(d2["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done
    for b in app["triggered"]:
        h.wait(b["id"], ("succeeded", "failed"))
    with h.client() as c:
        by_device = c.get("/api/v1/builds", params={"application": "fw", "device": "d2"}).json()
        assert {tuple(b["consumers"]) for b in by_device["items"]} == {("fw/d2",)}
        assert by_device["count"] == 2
        versions = {b["version"] for b in c.get("/api/v1/builds").json()["items"]}
        assert versions == {"9.9.9", "2.5.0-beta.1"}
        future = c.get("/api/v1/builds", params={"since": "2999-01-01T00:00:00Z"}).json()
        assert future["count"] == 0
        past = c.get("/api/v1/builds", params={"since": "2000-01-01", "until": "2999-01-01"})
        assert past.json()["count"] == 3
        bad = c.get("/api/v1/builds", params={"since": "yesterday"})
        assert bad.status_code == 422 and "RFC 3339" in bad.json()["error"]
        failed = c.get("/api/v1/builds", params={"state": "failed"}).json()
        assert failed["count"] == 0
        page = c.get(f"/api/v1/builds/{d2['id']}/log-lines", params={"after": 0}).json()
        assert page["state"] == "succeeded" and any("building" in ln for ln in page["lines"])
        rest = c.get(f"/api/v1/builds/{d2['id']}/log-lines", params={"after": page["next"]})
        assert rest.json()["lines"] == []
        missing = c.get("/api/v1/builds/b-nope")
        assert missing.status_code == 404 and "does not exist" in missing.json()["error"]


def test_version_file_is_stamped(h: Harness) -> None:
    h.commit({"VERSION": "3.1.0\n"})
    with h.client() as c:
        build = c.post("/api/v1/applications/fw/devices/d1/trigger").json()["triggered"][0]
    done = h.wait(build["id"], ("succeeded", "failed"))
    assert done["version"] == "3.1.0"


def test_trigger_refusals(h: Harness) -> None:
    with h.client() as c:
        rogue = c.post("/api/v1/applications/rogue/trigger")
        assert rogue.status_code == 403 and "allowlist" in rogue.json()["error"]
        assert c.post("/api/v1/applications/nope/trigger").status_code == 404
        nodev = c.post("/api/v1/applications/fw/devices/nope/trigger")
        assert nodev.status_code == 404 and "'nope'" in nodev.json()["error"]
        plain = c.post("/api/v1/applications/plain/trigger")
        assert plain.status_code == 200 and plain.json()["triggered"] == []
        assert "nothing to build" in plain.json()["explanation"]
        bad = c.post("/api/v1/applications/fw/trigger", json={"version": "1 2; rm"})
        assert bad.status_code == 422
        assert c.get("/api/v1/builds").json()["count"] == 0


def test_drogue_paths(h: Harness) -> None:
    h.commit({"a": "1"}, "main")
    h.commit({"b": "1"}, "beta")
    with h.client() as c:
        app = c.post("/api/build/v1alpha1/apps/fw/trigger")
        dev = c.post("/api/build/v1alpha1/apps/fw/devices/d2/trigger")
        assert app.status_code == 200 and dev.status_code == 200
        assert c.post("/api/build/v1alpha1/apps/rogue/trigger").status_code == 403
        assert c.post("/api/build/v1alpha1/apps/none/trigger").status_code == 404
    for b in app.json()["triggered"] + dev.json()["triggered"]:
        h.wait(b["id"], ("succeeded",))
    with h.client() as c:
        infos = c.get("/api/build/v1alpha1").json()
    apps = sorted((i["app"], i.get("device") or "") for i in infos)
    assert ("fw", "") in apps and ("fw", "d1") in apps and ("fw", "d2") in apps
    assert {i["status"] for i in infos} == {"Succeeded"}
    assert all(set(i) <= {"app", "device", "started", "completed", "status"} for i in infos)


def test_cancel_running_and_queue_full(tmp_path: Path) -> None:
    h = make(tmp_path, queue=1)
    h.commit({"delay": "60\n"})
    with h.running(), h.client() as c:
        first = c.post("/api/v1/applications/fw/devices/d1/trigger", json={"version": "1"})
        running = h.wait(first.json()["triggered"][0]["id"], ("running",))
        second = c.post("/api/v1/applications/fw/devices/d1/trigger", json={"version": "2"})
        assert second.status_code == 202
        full = c.post("/api/v1/applications/fw/devices/d1/trigger", json={"version": "3"})
        assert full.status_code == 429, full.text
        assert int(full.headers["Retry-After"]) > 0 and "queue" in full.json()["error"]
        queued_id = second.json()["triggered"][0]["id"]
        # the same spec again, without a version, joins the queued build instead of failing
        joined = c.post("/api/v1/applications/fw/devices/d1/trigger")
        assert joined.json()["alreadyQueued"][0]["id"] == queued_id
        h.wait_log(running["id"], "tick 1")  # live: the log grows while the build runs
        cancelled_q = c.post(f"/api/v1/builds/{queued_id}/cancel").json()
        assert cancelled_q["state"] == "cancelled"
        assert c.post(f"/api/v1/builds/{running['id']}/cancel").status_code == 200
        done = h.wait(running["id"], ("cancelled", "failed", "succeeded"), timeout=15)
        assert done["state"] == "cancelled", done
        assert done["duration"] < 30
        log = c.get(f"/api/v1/builds/{running['id']}/logs").text
        assert "tick 1" in log and "done" not in log.splitlines()


def left_running(
    records: Records, name: str, spec: str, consumers: tuple[str, ...], uri: str, rev: str
) -> Build:
    """A build record as a crashed service leaves it: running, never finished."""
    build = Build.queued(
        name=name, spec_hash=spec, application="fw", consumers=consumers, reason="api",
        git_url=uri, revision=rev, image="i", publish_to="t",
    )  # fmt: skip
    records.create(build)
    records.transition(build.id, BuildState.RUNNING)
    records.close()
    return build


def test_records_survive_a_restart_and_running_builds_are_marked(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.commit({"delay": "60\n"}, "main")
    h.commit({"delay": "0\n"}, "beta")
    with h.running(), h.client() as c:
        ok = c.post("/api/v1/applications/fw/devices/d2/trigger", json={"version": "7"})
        h.wait(ok.json()["triggered"][0]["id"], ("succeeded",))
        long = c.post("/api/v1/applications/fw/devices/d1/trigger", json={"version": "8"})
        long_id = long.json()["triggered"][0]["id"]
        h.wait(long_id, ("running",))
        # simulate a crash: the process dies without finishing the record
        db = tmp_path / "state" / "service" / "builds.db"
        assert db.is_file()
    # the clean shutdown above marked the running build interrupted; now emulate a crash
    # ("died while running": the record still says running)
    records = Records.sqlite(db)
    orphan = left_running(records, "ajour-fw-x", "f" * 64, ("fw",), "file:///x", "main")
    with h.running(), h.client() as c:
        items = {b["id"]: b for b in c.get("/api/v1/builds", params={"limit": 50}).json()["items"]}
    assert items[ok.json()["triggered"][0]["id"]]["state"] == "succeeded"
    assert items[long_id]["state"] == "interrupted"
    assert items[orphan.id]["state"] == "interrupted"
    assert "service stopped" in (items[orphan.id]["failure"] or "")


def test_interrupted_builds_are_retried_when_configured(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.config_text = h.config_text.replace(
        "publish: false", "publish: false\n  on_interrupted: retry"
    )
    h.commit({"a": "1"}, "beta")
    with h.running(), h.client() as c:
        first = c.post("/api/v1/applications/fw/devices/d2/trigger", json={"version": "1"})
        h.wait(first.json()["triggered"][0]["id"], ("succeeded",))
    db = tmp_path / "state" / "service" / "builds.db"
    records = Records.sqlite(db)
    spec = records.find()[0].spec_hash
    orphan = left_running(records, "ajour-fw-d2", spec, ("fw/d2",), h.remote_uri, "beta")
    with h.running(), h.client() as c:
        retried = [b for b in c.get("/api/v1/builds").json()["items"] if b["retryOf"] == orphan.id]
        assert len(retried) == 1 and retried[0]["attempt"] == 2
        assert h.wait(retried[0]["id"], ("succeeded", "failed"))["state"] == "succeeded"


def test_fleet_changes_are_picked_up_and_a_broken_fleet_keeps_the_last_good_one(
    h: Harness,
) -> None:
    fleet_file = h.root / "fleet" / "fleet.yaml"
    good = fleet_file.read_text()
    extra = "---\nmetadata: {name: d9, application: fw}\n"
    fleet_file.write_text(good + extra)

    def poll(check: Any) -> Any:
        deadline = time.monotonic() + 15
        while True:
            found = check()
            if found:
                return found
            assert time.monotonic() < deadline, "the service never saw the spec change"
            time.sleep(0.1)

    with h.client() as c:
        poll(lambda: c.post("/api/v1/applications/fw/devices/d9/trigger").status_code == 202)
        fleet_file.write_text(good + "---\nmetadata: {name: d10, application: nope}\n")
        ready = poll(lambda: (r := c.get("/readyz")).status_code == 503 and r)
        assert "'nope'" in ready.json()["checks"]["fleet"]
        # the last good fleet still builds
        again = c.post("/api/v1/applications/fw/devices/d9/trigger", json={"version": "2"})
        assert again.status_code == 202
        fleet_file.write_text(good)
        poll(lambda: c.get("/readyz").status_code == 200)
        gone = c.post("/api/v1/applications/fw/devices/d9/trigger")
        assert gone.status_code == 404
