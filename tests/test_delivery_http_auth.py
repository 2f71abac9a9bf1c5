"""Who may use the HTTP transport: bearer tokens for status and events, devices by password
or TLS client certificate, the same 401 for unknown devices, and serve's refusals.

Issue 12, findings 3 and 4, HTTPS, the route hook for ``/metrics``, and SIGTERM on serve.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from delivery import device_auth
from delivery.cli import main
from delivery.errors import DeliveryError
from delivery.http import HttpSettings, HttpTransport, Request, Response, TlsSettings
from delivery.protocol import Status, decode_command, encode_status
from delivery.worker import Worker
from tests.conftest import REPO
from tests.http_wire import (
    EVENTS_TOKEN,
    STATUS_TOKEN,
    basic,
    one,
    request,
    serving,
    settings,
    small_worker,
)
from tests.registry import free_port

STATUS = encode_status(Status(b"0.1", 512, 3))
OPENSSL = shutil.which("openssl")


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    return small_worker(tmp_path)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# finding 3: open endpoints -----------------------------------------------------------------


def test_status_and_events_need_their_own_bearer_token(worker: Worker) -> None:
    event = json.dumps({"image": "x/fw/app", "tag": "latest"}).encode()
    with serving(worker, settings()) as transport:
        for headers in ({}, bearer("wrong"), bearer(EVENTS_TOKEN), {"Authorization": "Basic x"}):
            got = one(transport, request("GET", "/v1/status", headers=headers))
            assert got.status == 401 and b"Bearer <the status token>" in got.body
            assert got.headers["www-authenticate"].startswith("Bearer")
        for headers in ({}, bearer("wrong"), bearer(STATUS_TOKEN)):
            assert one(transport, request("POST", "/v1/events", event, headers)).status == 401
        assert worker.counters.snapshot().get("events", 0) == 0
        ok = one(transport, request("GET", "/v1/status/app", headers=bearer(STATUS_TOKEN)))
        assert ok.status == 200 and len(json.loads(ok.body)) == 4
        done = one(transport, request("POST", "/v1/events", event, bearer(EVENTS_TOKEN)))
        assert done.status == 200 and json.loads(done.body) == {"invalidated": 0}


def test_an_endpoint_without_a_configured_token_refuses_everyone(worker: Worker) -> None:
    with serving(worker, settings(status_token="", events_token="")) as transport:
        for raw in (
            request("GET", "/v1/status", headers={"Authorization": "Bearer "}),
            request("POST", "/v1/events", b"{}", {"Authorization": "Bearer "}),
        ):
            got = one(transport, raw)
            assert got.status == 401 and b"no" in got.body and b"token configured" in got.body


def test_insecure_no_auth_opens_everything_but_only_on_loopback(worker: Worker) -> None:
    with serving(worker, HttpSettings(port=0, authenticate=False)) as transport:
        assert one(transport, request("GET", "/v1/status")).status == 200
        got = one(transport, request("POST", "/v1/dfu?application=app&device=ghost", STATUS))
        assert got.status == 404  # nothing to hide without authentication
    with pytest.raises(DeliveryError, match="only on a loopback address"):
        HttpTransport(worker, HttpSettings(host="0.0.0.0", port=0, authenticate=False))


def fleet_dir(tmp: Path) -> str:
    small_worker(tmp)
    return str(tmp / "fleet")


def test_serve_refuses_to_start_without_tokens(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("AJOUR_DELIVERY_STATUS_TOKEN", raising=False)
    monkeypatch.delenv("AJOUR_DELIVERY_EVENTS_TOKEN", raising=False)
    base = ["serve", "--fleet", fleet_dir(tmp_path), "--registry", f"oci-layout://{tmp_path}"]
    port = str(free_port())
    result = CliRunner().invoke(main, [*base, "--http", f"127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert "--status-token" in result.output and "AJOUR_DELIVERY_EVENTS_TOKEN" in result.output
    result = CliRunner().invoke(main, [*base, "--http", f"0.0.0.0:{port}", "--insecure-no-auth"])
    assert result.exit_code == 1 and "loopback" in result.output
    tokens = ["--status-token", "s", "--events-token", "e"]
    result = CliRunner().invoke(
        main, [*base, "--http", f"127.0.0.1:{port}", *tokens, "--tls-cert", "x"]
    )
    assert result.exit_code == 1 and "--tls-key" in result.output


def test_serve_takes_tokens_from_the_environment_and_stops_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM (Kubernetes' stop): the worker stops accepting, drains and exits 0."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AJOUR_DELIVERY_STATUS_TOKEN": STATUS_TOKEN,
        "AJOUR_DELIVERY_EVENTS_TOKEN": EVENTS_TOKEN,
    }
    fleet = fleet_dir(tmp_path)
    args = ["--fleet", fleet, "--registry", f"oci-layout://{tmp_path / 'oci'}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "delivery.cli", "serve", "--http", f"127.0.0.1:{port}", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1].decode()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/v1/status", headers=bearer(STATUS_TOKEN))
                response = conn.getresponse()
                assert response.status == 200 and len(json.loads(response.read())) == 4
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
            finally:
                conn.close()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err.decode()
        assert STATUS_TOKEN not in err.decode() and EVENTS_TOKEN not in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# finding 4: enumeration --------------------------------------------------------------------


def test_an_unknown_device_gets_the_same_401_after_the_same_comparison(
    worker: Worker, monkeypatch: Any
) -> None:
    compared: list[str] = []
    real = device_auth.check

    def spy(credentials: Any, password: str, username: str | None = None) -> bool:
        compared.append(password)
        return bool(real(credentials, password, username))

    monkeypatch.setattr(device_auth, "check", spy)
    with serving(worker, settings()) as transport:
        known = one(
            transport,
            request("POST", "/v1/dfu", STATUS, {"Authorization": basic("dev1@app", "guess-1")}),
        )
        ghost = one(
            transport,
            request("POST", "/v1/dfu", STATUS, {"Authorization": basic("ghost@app", "guess-2")}),
        )
        by_query = one(
            transport,
            request(
                "POST",
                "/v1/dfu?application=nope&device=ghost",
                STATUS,
                {"Authorization": basic("ghost", "guess-3")},
            ),
        )
    assert known.status == ghost.status == by_query.status == 401
    assert known.body == ghost.body == by_query.body
    assert known.headers == ghost.headers == by_query.headers
    assert compared == ["guess-1", "guess-2", "guess-3"], "every password is compared"


# HTTPS and client certificates -------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL, "openssl is needed (scripts/setup installs it)"
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)  # fmt: skip


def make_cert(d: Path, ca: str, name: str, cn: str, san: str) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
            "-out", f"{name}.pem", cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "ca", "server", "127.0.0.1", "IP:127.0.0.1")
    make_cert(d, "ca", "dev1", "dev1@app", "DNS:dev1.devices.example")  # named by its CN
    make_cert(d, "ca", "dev2", "device two", "email:dev2@app")  # named by a SAN
    make_cert(d, "ca", "ghost", "ghost@app", "DNS:ghost.devices.example")
    make_cert(d, "other-ca", "forged", "dev1@app", "DNS:dev1.devices.example")
    return d


def https(
    transport: HttpTransport, pki: Path, cert: str | None, target: str, headers: dict[str, str]
) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=pki / "ca.pem")
    if cert:
        context.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    conn = http.client.HTTPSConnection("127.0.0.1", transport.port, context=context, timeout=5)
    try:
        conn.request("POST", target, body=STATUS, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_https_with_passwords_and_client_certificates(worker: Worker, pki: Path) -> None:
    tls = TlsSettings(pki / "server.pem", pki / "server.key", client_ca=pki / "ca.pem")
    with serving(worker, settings(tls=tls)) as transport:
        assert transport.url.startswith("https://")
        password = {"Authorization": basic("dev3@app", "pw-3")}
        code, body = https(transport, pki, None, "/v1/dfu", password)
        assert code == 200 and decode_command(body).correlation_id == 3
        assert https(transport, pki, "dev1", "/v1/dfu", {})[0] == 200  # the CN names it
        assert https(transport, pki, "dev2", "/v1/dfu?application=app&device=dev2", {})[0] == 200
        # a certificate is for its own device only, and only for a device of the fleet
        assert https(transport, pki, "dev1", "/v1/dfu?application=app&device=dev2", {})[0] == 401
        assert https(transport, pki, "ghost", "/v1/dfu", {})[0] == 401
        assert https(transport, pki, None, "/v1/dfu", {})[0] == 400  # no name at all
        handled = worker.counters.snapshot()
        # a certificate of another CA ends the handshake (TLS 1.3: seen at the first read)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https(transport, pki, "forged", "/v1/dfu", {})
        assert worker.counters.snapshot() == handled
        plain = http.client.HTTPConnection("127.0.0.1", transport.port, timeout=5)
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/v1/status", headers=bearer(STATUS_TOKEN))
            plain.getresponse().read()
        plain.close()


def test_tls_files_that_do_not_load_are_a_precise_error(worker: Worker, tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    tls = TlsSettings(tmp_path / "bad.pem", tmp_path / "bad.pem")
    with pytest.raises(DeliveryError, match=r"cannot load TLS files.*PEM certificate chain"):
        HttpTransport(worker, settings(tls=tls))


# the hook for GET /metrics -----------------------------------------------------------------


def test_a_route_can_be_added_behind_its_own_token(worker: Worker) -> None:
    def metrics(_request: Request, _body: bytes) -> Response:
        lines = [f"ajour_http_{k} {v}" for k, v in sorted(transport.stats().items())]
        return Response(200, "\n".join(lines).encode(), "text/plain; version=0.0.4")

    with serving(worker, settings()) as transport:
        transport.add_route("/metrics", metrics, token="metrics-secret")
        assert one(transport, request("GET", "/metrics")).status == 401
        got = one(transport, request("GET", "/metrics", headers=bearer("metrics-secret")))
        assert got.status == 200 and b"ajour_http_connections_open 1" in got.body
        assert one(transport, request("POST", "/metrics", b"x")).status == 405
        with pytest.raises(DeliveryError, match="own routes"):
            transport.add_route("/v1/status/x", metrics, token="t")
