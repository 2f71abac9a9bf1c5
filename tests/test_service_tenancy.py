"""The build service over real HTTP: tenancy on triggers and webhooks, the version grammar
of the API, webhook replays across providers, and a client that disconnects mid-body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.firmware import fake_builder
from tests.service import BUILDER, SECRET, TOKEN, Harness, github_push

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
metadata: {{name: evil, application: fw}}
spec:
  firmware:
    container:
      image: rogue:latest
      build:
        image: fake
        source: {{git: {{uri: "{uri}", rev: main}}}}
        artifact: {{path: out/fw.bin}}
---
kind: Application
metadata: {{name: rogue}}
spec:
  firmware:
    container: {{image: "rogue:latest"}}
"""
CONFIG = f"""\
allowed_applications: [fw]
service:
  tokens: [{TOKEN}]
  runner: host
  publish: false
  webhooks: {{github: {SECRET}, gitea: {SECRET}}}
"""
LOCAL = "sources: {allow_local: true}\n"


def harness(root: Path, config: str) -> Harness:
    h = Harness(root, config)
    fake_builder(root / "builders", "fake", BUILDER)
    (root / "fleet").mkdir()
    (root / "fleet" / "fleet.yaml").write_text(APPS.format(uri=h.remote_uri))
    return h


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    service = harness(tmp_path, CONFIG + LOCAL)
    with service.running():
        yield service


def push(h: Harness) -> dict[str, object]:
    before, after = h.commit({"main.c": f"int x = {time.monotonic_ns()};\n"})
    return github_push(h.remote_uri, "refs/heads/main", before, after)


def count(h: Harness) -> int:
    with h.client() as c:
        return int(c.get("/api/v1/builds").json()["count"])


# -- tenancy -----------------------------------------------------------------------------


def test_push_does_not_build_a_device_that_publishes_into_another_apps_image(
    h: Harness,
) -> None:
    reply = h.github(push(h))
    assert reply.status_code == 202, reply.text
    body = reply.json()
    assert [b["consumers"] for b in body["triggered"]] == [["fw", "fw/d1"]]
    assert [b["image"] for b in body["triggered"]] == ["127.0.0.1:5000/ajour/fw:latest"]
    (refusal,) = body["refused"]
    assert "'fw/evil'" in refusal and "repository 'rogue'" in refusal
    assert "publish_repositories.fw" in refusal


def test_trigger_of_the_crossing_device_is_refused(h: Harness) -> None:
    h.commit({"a": "1"})
    with h.client() as c:
        device = c.post("/api/v1/applications/fw/devices/evil/trigger")
        assert device.status_code == 403, device.text
        assert "publish_repositories.fw" in device.json()["error"]
        app = c.post("/api/v1/applications/fw/trigger")
        assert app.status_code == 202, app.text
        assert [b["consumers"] for b in app.json()["triggered"]] == [["fw", "fw/d1"]]
        assert "'fw/evil'" in app.json()["refused"][0]
    assert count(h) == 1


def test_local_sources_are_refused_by_default(tmp_path: Path) -> None:
    h = harness(tmp_path, CONFIG + "publish_repositories: {fw: [rogue]}\n")
    with h.running():
        reply = h.github(push(h))
        assert reply.status_code == 202, reply.text
        assert reply.json()["triggered"] == []
        assert "refused (allowlist or tenancy)" in reply.json()["explanation"]
        assert all("sources.allow_local: true" in r for r in reply.json()["refused"])
        with h.client() as c:
            refused = c.post("/api/v1/applications/fw/trigger")
        assert refused.status_code == 403 and "sources.allow_local" in refused.json()["error"]
        assert count(h) == 0


# -- the version grammar -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("1.0~rc1", "contains '~'"),
        ("1.0\n", "contains '\\n'"),
        ("1.0.0+build.5", "contains '+'"),
        ("-1", "starts with '-'"),
        (".1", "starts with '.'"),
        ("v" * 129, "129 characters"),
        ("", "it is empty"),
    ],
)
def test_api_refuses_a_version_that_is_no_oci_tag(h: Harness, version: str, why: str) -> None:
    with h.client() as c:
        reply = c.post("/api/v1/applications/fw/trigger", json={"version": version})
    assert reply.status_code == 422, reply.text
    message = json.dumps(reply.json())
    assert why in message.replace("\\\\", "\\") and "OCI tag" in message
    assert count(h) == 0


def test_api_takes_a_tag_shaped_version(h: Harness) -> None:
    h.commit({"a": "1"})
    with h.client() as c:
        reply = c.post("/api/v1/applications/fw/trigger", json={"version": "2.0.0-rc.1_b"})
    assert reply.status_code == 202, reply.text
    done = h.wait(reply.json()["triggered"][0]["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded" and done["version"] == "2.0.0-rc.1_b"


# -- webhooks ----------------------------------------------------------------------------


def test_a_github_delivery_replayed_to_gitea_builds_once(h: Harness) -> None:
    body = json.dumps(push(h)).encode()
    first = h.github({}, body=body)
    assert first.status_code == 202 and first.json()["triggered"], first.text
    built = count(h)
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": str(uuid.uuid4()),
        "X-Gitea-Signature": signature,
    }
    with h.client(None) as c:
        replay = c.post("/webhooks/gitea", content=body, headers=headers)
    assert replay.status_code == 200, replay.text
    assert replay.json()["duplicate"] is True and replay.json()["triggered"] == []
    assert count(h) == built


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_that_disconnects_mid_body_gets_one_log_line(h: Harness) -> None:
    seen = Records()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "ajour_build")]
    for logger in loggers:
        logger.addHandler(seen)
    try:
        port = int(h.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"ref": "refs/heads/main", '
            )
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while not any("disconnected" in r.getMessage() for r in seen.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in seen.records]
            time.sleep(0.05)
        time.sleep(0.5)  # anything logged after the line would show up now
    finally:
        for logger in loggers:
            logger.removeHandler(seen)
    unique = {id(r): r for r in seen.records}.values()  # a record may pass two handlers
    lines = [r for r in unique if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [(r.name, r.getMessage()) for r in lines]
    (line,) = lines
    assert line.exc_info is None
    assert line.getMessage() == (
        "POST /webhooks/github: the client disconnected after 27 of 1000 body bytes;"
        " nothing was done"
    )
    assert count(h) == 0
    with h.client() as c:
        assert c.get("/healthz").status_code == 200
