"""The delivery worker's probes, for Kubernetes: ``GET /healthz`` and ``GET /readyz``.

Real transport on loopback, authentication on: the probes need no token and tell nothing
but ``ok``; liveness comes from the event loop, readiness from a free handler thread.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ajour_build.core.fleet import load_fleet
from delivery.errors import DeliveryError
from delivery.http import HttpSettings, HttpTransport, Limits, Request, Response
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.http_wire import EVENTS_TOKEN, STATUS_TOKEN

FLEET = """\
kind: Application
metadata: {name: app}
spec: {firmware: {container: {image: fw/app:latest}}}
---
metadata: {name: dev0, application: app}
spec: {credentials: {credentials: [{pass: secret-password-0}]}}
"""


@pytest.fixture
def transport(tmp_path: Path) -> Iterator[HttpTransport]:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    worker = Worker(
        Targets(load_fleet([tmp_path / "fleet.yaml"]), "127.0.0.1:9/ajour", ttl=600),
        StatusStore(":memory:"),
    )
    settings = HttpSettings(
        port=0,
        status_token=STATUS_TOKEN,
        events_token=EVENTS_TOKEN,
        limits=Limits(threads=1),
    )
    served = HttpTransport(worker, settings)
    served.start()
    try:
        yield served
    finally:
        served.stop()


def get(url: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        return exc.code, body, exc.headers.get("content-type", "")


def test_probes_need_no_token_and_tell_nothing_but_ok(transport: HttpTransport) -> None:
    for path in ("/healthz", "/readyz"):
        status, body, kind = get(transport.url + path)
        assert (status, body, kind) == (200, b'{"status":"ok"}', "application/json"), path
        for word in ("dev0", "app", "secret", "127.0.0.1", STATUS_TOKEN):
            assert word.encode() not in body
        status, body, _ = get(transport.url + path, method="POST")
        assert status == 405 and b"use GET" in body
    # the routes beside them still want their tokens
    assert get(transport.url + "/v1/status")[0] == 401
    assert get(transport.url + "/healthz/more")[0] == 404


def test_readiness_needs_a_free_handler_thread_and_liveness_does_not(
    transport: HttpTransport,
) -> None:
    entered, release = threading.Event(), threading.Event()

    def busy(_request: Request, _body: bytes) -> Response:
        entered.set()
        release.wait(20)
        return Response(200, b"done")

    transport.add_route("/busy", busy, token=STATUS_TOKEN)
    blocker = threading.Thread(
        target=lambda: urllib.request.urlopen(
            urllib.request.Request(
                transport.url + "/busy", headers={"Authorization": f"Bearer {STATUS_TOKEN}"}
            ),
            timeout=30,
        ).close()
    )
    blocker.start()
    try:
        assert entered.wait(10), "the busy handler never ran"
        # the only handler thread is taken: liveness answers, readiness does not
        assert get(transport.url + "/healthz", timeout=2)[0] == 200
        with pytest.raises(TimeoutError):
            get(transport.url + "/readyz", timeout=1)
    finally:
        release.set()
        blocker.join(10)
    assert get(transport.url + "/readyz")[0] == 200


def test_a_route_cannot_take_a_probe_path(transport: HttpTransport) -> None:
    for path in ("/healthz", "/readyz"):
        with pytest.raises(DeliveryError, match="one of the worker's own routes"):
            transport.add_route(path, lambda _r, _b: Response(200), token="t")
