"""Delivery over CoAP (delivery/coap.py): a real aiocoap server on loopback UDP, driven by
aiocoap as a client and by Debian's libcoap ``coap-client``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ajour_build.core.fleet import load_fleet
from delivery.device import SimulatedDevice
from delivery.http import HttpSettings, HttpTransport
from delivery.protocol import Status, Swap, UpdateStatus, Write, decode_command, encode_status
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.http_wire import EVENTS_TOKEN
from tests.test_sources import publish

aiocoap = pytest.importorskip("aiocoap")
from aiocoap.numbers.codes import Code  # noqa: E402
from aiocoap.optiontypes import BlockOption, StringOption  # noqa: E402

from delivery.coap import AUTHORIZATION_OPTION, CoapSettings, CoapTransport  # noqa: E402

FLEET = """\
kind: Application
metadata: {name: app}
spec: {firmware: {container: {image: fw/app:latest}}}
---
metadata: {name: dev1, application: app}
spec: {credentials: {credentials: [{pass: pw-1}]}}
---
metadata: {name: dev2, application: app}
spec: {credentials: {credentials: [{user: {username: alice, password: wonder}}]}}
"""
IMAGE = bytes(range(256)) * 12  # 3 KiB
QUERY = "application=app&device=dev1"


class Served:
    def __init__(self, root: Path, transport: CoapTransport, worker: Worker) -> None:
        self.root, self.transport, self.worker = root, transport, worker
        self.url = f"coap://127.0.0.1:{transport.port}/v1/dfu"

    def publish(self, version: str, content: bytes) -> None:
        publish(self.root, f"oci-layout://{self.root / 'oci' / 'fw' / 'app'}:latest", version,
                content)  # fmt: skip


@contextlib.contextmanager
def serving(root: Path, settings: CoapSettings) -> Iterator[Served]:
    (root / "fleet").mkdir()
    (root / "fleet" / "f.yaml").write_text(FLEET)
    publish(root, f"oci-layout://{root / 'oci' / 'fw' / 'app'}:latest", "1.0", IMAGE)
    targets = Targets(load_fleet([root / "fleet"]), f"oci-layout://{root / 'oci'}")
    worker = Worker(targets, StatusStore())
    transport = CoapTransport(worker, settings)
    transport.start()
    try:
        yield Served(root, transport, worker)
    finally:
        transport.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = CoapSettings(port=0, observe_poll=30.0, max_observers=2, threads=2)
    with serving(tmp_path, settings) as found:
        yield found


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(
    url: str,
    payload: bytes = b"",
    *,
    code: Any = None,
    auth: str | None = basic("dev1@app", "pw-1"),
    content_format: int | None = 60,
) -> Any:
    message = aiocoap.Message(
        code=code or Code.POST, uri=url, payload=payload, content_format=content_format
    )
    if auth is not None:
        message.opt.add_option(StringOption(AUTHORIZATION_OPTION, auth))
    return message


async def exchange(*messages: Any, block_exp: int | None = None) -> list[Any]:
    context = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        answers = []
        for message in messages:
            if block_exp is not None:
                message.remote = None
                req = context.request(message)
            else:
                req = context.request(message)
            answers.append(await asyncio.wait_for(req.response, 20))
        return answers
    finally:
        await context.shutdown()


def ask(*messages: Any) -> list[Any]:
    return asyncio.run(exchange(*messages))


def test_a_device_updates_fully_over_coap(served: Served) -> None:
    """The simulated device walks from 0.9 to 1.0 with POSTs answered 2.04 Changed."""

    async def walk() -> SimulatedDevice:
        device = SimulatedDevice(b"0.9", mtu=256)
        context = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            for _ in range(40):
                status = encode_status(device.status())
                answer = await context.request(request(f"{served.url}?{QUERY}", status)).response
                assert answer.code == Code.CHANGED, answer.payload
                assert answer.opt.content_format == 60
                device.apply(decode_command(answer.payload))
                if device.synced:
                    return device
        finally:
            await context.shutdown()
        raise AssertionError(f"no sync after 40 round trips: {device}")

    device = asyncio.run(walk())
    assert (device.version, device.swaps, device.bytes_received) == (b"1.0", 1, len(IMAGE))
    assert device.firmware == IMAGE
    assert served.worker.counters.snapshot().get("commands.swap", 1) >= 1
    assert served.transport.snapshot()["changed"] >= len(IMAGE) // 256 + 2


def test_a_large_write_comes_in_blocks_to_a_small_block_client(served: Served) -> None:
    """An mtu 1024 Write (about 1.05 KiB of CBOR) goes out in Block2 blocks of 64 bytes."""
    status = encode_status(Status(b"0.9", 1024))

    async def fetch() -> tuple[Any, int]:
        context = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            message = request(f"{served.url}?{QUERY}", status)
            message.opt.block2 = BlockOption.BlockwiseTuple(0, False, 2)  # 64-byte blocks
            answer = await context.request(message).response
            return answer, 0
        finally:
            await context.shutdown()

    answer, _ = asyncio.run(fetch())
    assert answer.code == Code.CHANGED
    command = decode_command(answer.payload)
    assert isinstance(command, Write) and command.data == IMAGE[:1024]
    assert answer.opt.block2 is not None and answer.opt.block2.size_exponent == 2


def test_block_transfer_with_libcoap(served: Served, tmp_path: Path) -> None:
    coap_client = shutil.which("coap-client-notls") or shutil.which("coap-client")
    if coap_client is None:
        pytest.skip("coap-client (Debian: libcoap3-bin) is not installed; scripts/setup adds it")
    status = tmp_path / "status.cbor"
    status.write_bytes(encode_status(Status(b"0.9", 1024)))
    out = tmp_path / "out.cbor"
    result = subprocess.run(
        [coap_client, "-m", "post", "-t", "60", "-b", "64", "-f", str(status), "-o", str(out),
         "-O", f"{AUTHORIZATION_OPTION},{basic('dev1@app', 'pw-1')}", f"{served.url}?{QUERY}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = served.worker.handle("app", "dev1", status.read_bytes())
    assert out.read_bytes() == expected
    command = decode_command(out.read_bytes())
    assert isinstance(command, Write) and command.data == IMAGE[:1024]


def test_coap_client_posts_a_status_and_gets_the_cbor_command(
    served: Served, tmp_path: Path
) -> None:
    coap_client = shutil.which("coap-client-notls") or shutil.which("coap-client")
    if coap_client is None:
        pytest.skip("coap-client (Debian: libcoap3-bin) is not installed; scripts/setup adds it")
    status = tmp_path / "status.cbor"
    status.write_bytes(encode_status(Status(b"0.9", 256, 7)))
    out = tmp_path / "out.cbor"
    result = subprocess.run(
        [coap_client, "-m", "post", "-T", "cafe", "-t", "60", "-f", str(status), "-o", str(out),
         "-O", f"{AUTHORIZATION_OPTION},{basic('dev1@app', 'pw-1')}", f"{served.url}?{QUERY}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = decode_command(out.read_bytes())
    assert command == Write(b"1.0", 7, 0, IMAGE[:256])
    wrong = subprocess.run(
        [coap_client, "-m", "post", "-t", "60", "-f", str(status),
         "-O", f"{AUTHORIZATION_OPTION},{basic('dev1@app', 'nope')}", f"{served.url}?{QUERY}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "4.01" in wrong.stdout + wrong.stderr


def test_refusals(served: Served) -> None:
    status = encode_status(Status(b"0.9", 256))
    url = f"{served.url}?{QUERY}"
    ghost, alice = basic("ghost@app", "pw-1"), basic("alice", "wonder")
    wrong, unknown, none, user, text, garbled, big = ask(
        request(url, status, auth=basic("dev1@app", "pw-2")),
        request(f"{served.url}?application=app&device=ghost", status, auth=ghost),
        request(url, status, auth=None),
        request(f"{served.url}?application=app&device=dev2", status, auth=alice),
        request(url, status, content_format=0),
        request(url, b"\xa1\x00\xff garbage"),
        request(url, b"\x00" * 5000),
    )
    assert (wrong.code, unknown.code, none.code) == (Code.UNAUTHORIZED,) * 3
    assert wrong.payload == unknown.payload, "an unknown device is told what a wrong password is"
    assert b"4209" in wrong.payload
    assert user.code == Code.CHANGED, "a username of the device's credentials logs in"
    assert text.code == Code.UNSUPPORTED_CONTENT_FORMAT and b"Content-Format 60" in text.payload
    assert garbled.code == Code.BAD_REQUEST
    assert garbled.payload.startswith(b"the status is not a valid embedded-update CBOR Status:")
    assert big.code == Code.REQUEST_ENTITY_TOO_LARGE and big.opt.size1 == 4096
    stats = served.transport.snapshot()
    assert stats["unauthorized"] == 3 and stats["errors"] == 0


def test_bad_datagrams_never_stop_the_server(served: Served) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"", b"\xff", b"\x40\x02\x00\x01\xff", b"\x4f" + b"\x00" * 40, b"x" * 1400):
            sock.sendto(junk, ("127.0.0.1", served.transport.port))
    status = encode_status(Status(b"1.0", 256))
    (answer,) = ask(request(f"{served.url}?{QUERY}", status))
    assert answer.code == Code.CHANGED
    assert served.transport.snapshot()["errors"] == 0


def observe_until_new_version(
    served: Served, announce: Callable[[], None]
) -> tuple[list[bytes], float, Any]:
    """Observe /v1/dfu as dev1 (and try once with a wrong password), publish 1.1, call
    ``announce``; the payloads seen, how long the notification took, the refused answer."""

    async def observe() -> tuple[list[bytes], float, Any]:
        context = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            message = request(f"{served.url}?{QUERY}", code=Code.GET, content_format=None)
            message.opt.observe = 0
            req = context.request(message)
            first = await asyncio.wait_for(req.response, 20)
            seen = [bytes(first.payload)]
            wrong = basic("dev1@app", "wrong")
            refused_msg = request(f"{served.url}?{QUERY}", code=Code.GET, auth=wrong,
                                  content_format=None)  # fmt: skip
            refused_msg.opt.observe = 0
            refused = await asyncio.wait_for(context.request(refused_msg).response, 20)
            started = time.monotonic()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, served.publish, "1.1", b"n" * 500)
            await loop.run_in_executor(None, announce)
            async for note in req.observation:
                seen.append(bytes(note.payload))
                break
            return seen, time.monotonic() - started, refused
        finally:
            await context.shutdown()

    return asyncio.run(asyncio.wait_for(observe(), 30))


def test_observe_announces_a_version_published_with_an_event(served: Served) -> None:
    """A device observing /v1/dfu hears of 1.1 when a publish event (POST /v1/events)
    invalidates targets, well before the 30 s poll."""
    http = HttpTransport(
        served.worker, HttpSettings(port=0, status_token="s", events_token=EVENTS_TOKEN)
    )
    http.start()
    event = json.dumps({"image": "fw/app", "tag": "latest", "version": "1.1"}).encode()

    def post_event() -> None:
        req = urllib.request.Request(
            f"{http.url}/v1/events", event,
            {"Authorization": f"Bearer {EVENTS_TOKEN}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as answer:
            assert answer.status == 200

    try:
        seen, took, refused = observe_until_new_version(served, post_event)
    finally:
        http.stop()
    assert seen == [b"\x431.0", b"\x431.1"]
    assert took < 5
    assert refused.code == Code.UNAUTHORIZED and refused.opt.observe is None
    stats = served.transport.snapshot()
    assert stats["notifications"] == 1 and stats["observers"] == 1


def test_observe_notices_a_new_version_without_an_event(tmp_path: Path) -> None:
    """Without a publish event, the poll (here 0.3 s) finds the new version."""
    with serving(tmp_path, CoapSettings(port=0, observe_poll=0.3)) as served:
        seen, took, _ = observe_until_new_version(served, lambda: None)
    assert seen == [b"\x431.0", b"\x431.1"] and took < 5


def test_the_observer_bound_and_dropped_observers(served: Served) -> None:
    async def run() -> tuple[list[Any], int, int]:
        context = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            answers, reqs = [], []
            for _ in range(3):
                message = request(f"{served.url}?{QUERY}", code=Code.GET, content_format=None)
                message.opt.observe = 0
                req = context.request(message)
                reqs.append(req)
                answers.append(await asyncio.wait_for(req.response, 20))
            full = len(served.transport.observers)
            for req in reqs:
                if not req.observation.cancelled:
                    req.observation.cancel()
            await asyncio.sleep(0.2)
        finally:
            await context.shutdown()
        return answers, full, len(served.transport.observers)

    answers, full, _ = asyncio.run(run())
    assert [a.opt.observe is not None for a in answers] == [True, True, False]
    assert full == 2 and served.transport.snapshot()["observers_refused"] == 1
    served.publish("1.2", b"m" * 100)
    served.worker.targets.invalidate()  # notifications to a closed client end them
    deadline = time.monotonic() + 10
    while len(served.transport.observers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(served.transport.observers) == 0


def test_serve_without_coap_never_imports_aiocoap() -> None:
    probe = (
        "import sys\nfrom delivery.cli import main\nimport delivery.coap, delivery.coap_site\n"
        "print('aiocoap' in sys.modules)"
    )
    from tests.conftest import REPO

    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
        check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "False"


def test_swap_checksum(served: Served) -> None:
    status = encode_status(Status(b"0.9", 256, None, UpdateStatus(b"1.0", len(IMAGE))))
    (answer,) = ask(request(f"{served.url}?{QUERY}", status))
    assert decode_command(answer.payload) == Swap(b"1.0", None, hashlib.sha256(IMAGE).digest())


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_takes_coap_from_ajour_yaml(tmp_path: Path) -> None:
    """``delivery.coap`` in ajour.yaml (as ``--coap``) serves CoAP alone; SIGTERM stops it."""
    import os
    import signal

    from tests.conftest import REPO

    port = free_udp_port()
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "f.yaml").write_text(FLEET)
    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "1.0", IMAGE)
    (fleet / "ajour.yaml").write_text(
        f"delivery:\n  coap: 127.0.0.1:{port}\n  coap_max_observers: 5\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "delivery.cli", "serve", "--fleet", str(fleet),
         "--registry", f"oci-layout://{tmp_path / 'oci'}"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(2)]
        assert f"serving CoAP on coap://127.0.0.1:{port}\n" in lines, lines
        status = encode_status(Status(b"0.9", 64))
        (answer,) = ask(request(f"coap://127.0.0.1:{port}/v1/dfu?{QUERY}", status))
        assert answer.code == Code.CHANGED
        assert decode_command(answer.payload) == Write(b"1.0", None, 0, IMAGE[:64])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_refuses_bad_coap_options(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from delivery.cli import main

    (tmp_path / "f.yaml").write_text(FLEET)
    runner = CliRunner()
    bad = runner.invoke(main, ["serve", "--fleet", str(tmp_path), "--coap", "localhost"])
    assert bad.exit_code == 1
    assert "--coap expects HOST:PORT (or [IPv6]:PORT), got 'localhost'" in bad.output
    open_ = runner.invoke(
        main, ["serve", "--fleet", str(tmp_path), "--coap", "0.0.0.0:5683", "--insecure-no-auth"]
    )
    assert open_.exit_code == 1 and "only allowed on a loopback --coap address" in open_.output
    (tmp_path / "ajour.yaml").write_text("delivery:\n  coap: nowhere\n")
    typo = runner.invoke(main, ["serve", "--fleet", str(tmp_path)])
    assert typo.exit_code != 0 and "'nowhere' is not HOST:PORT" in typo.output


def test_without_aiocoap_serve_coap_names_the_extra(tmp_path: Path) -> None:
    from tests.conftest import REPO

    probe = (
        "import sys\nsys.modules['aiocoap'] = None\n"
        "from delivery.coap import CoapSettings, CoapTransport\n"
        "try:\n    CoapTransport(None, CoapSettings(port=0))\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == (
        "DeliveryError serve --coap needs aiocoap: pip install 'ajour[coap]' (or aiocoap>=0.4)"
    )
