"""CoAP against HTTP delivery in the same run: round trips/s and server CPU per round trip.

One ``ajour-delivery serve --http … --coap …`` process serves both transports from the same
worker (an OCI layout with a 128 KiB image, devices with plain passwords). Simulated devices
walk the image in closed loops (status → command → apply; a synced device starts over),
1 and 8 at a time, all on one asyncio loop in this process: aiocoap for CoAP (option 4209
Basic auth, Content-Format 60), a minimal keep-alive HTTP/1.1 client for HTTP (basic auth).
Best of 2 windows per case, after a warm-up; server CPU from ``/proc/<pid>/stat``.

    python benchmarks/delivery_coap.py [--seconds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose delivery.py shadows the package

import aiocoap  # noqa: E402
from aiocoap.numbers.codes import Code  # noqa: E402
from aiocoap.optiontypes import StringOption  # noqa: E402

from delivery.coap import AUTHORIZATION_OPTION  # noqa: E402
from delivery.device import SimulatedDevice  # noqa: E402
from delivery.protocol import decode_command, encode_status  # noqa: E402
from tests.test_sources import publish  # noqa: E402

DEVICES = 8
MTU = 512
IMAGE = os.urandom(128 * 1024)
Exchange = Callable[[int, bytes], Awaitable[bytes]]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def basic(i: int) -> str:
    return "Basic " + base64.b64encode(f"d{i}@app:pw-{i}".encode()).decode()


async def http_exchanges(port: int, n: int) -> tuple[Exchange, Callable[[], None]]:
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]

    async def exchange(i: int, status: bytes) -> bytes:
        reader, writer = conns[i]
        writer.write(
            f"POST /v1/dfu?application=app&device=d{i} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {basic(i)}\r\nContent-Type: application/cbor\r\n"
            f"Content-Length: {len(status)}\r\n\r\n".encode()
            + status
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return await reader.readexactly(length)

    def close() -> None:
        for _, writer in conns:
            writer.close()

    return exchange, close


async def coap_exchanges(port: int) -> tuple[Exchange, Callable[[], Awaitable[None]]]:
    context = await aiocoap.Context.create_client_context(transports=["udp6"])

    async def exchange(i: int, status: bytes) -> bytes:
        message = aiocoap.Message(
            code=Code.POST,
            uri=f"coap://127.0.0.1:{port}/v1/dfu?application=app&device=d{i}",
            payload=status,
            content_format=60,
        )
        message.opt.add_option(StringOption(AUTHORIZATION_OPTION, basic(i)))
        answer = await context.request(message).response
        assert answer.code == Code.CHANGED, answer
        return bytes(answer.payload)

    return exchange, context.shutdown


async def window(exchange: Exchange, n: int, seconds: float) -> int:
    devices = [SimulatedDevice(b"0.1", MTU) for _ in range(n)]
    done = 0
    deadline = time.monotonic() + seconds

    async def loop(i: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            device = devices[i]
            device.apply(decode_command(await exchange(i, encode_status(device.status()))))
            if device.synced:
                devices[i] = SimulatedDevice(b"0.1", MTU)
            done += 1

    await asyncio.gather(*(loop(i) for i in range(n)))
    return done


async def measure(pid: int, http: int, coap: int, seconds: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n in (1, DEVICES):
        h_ex, h_close = await http_exchanges(http, n)
        c_ex, c_close = await coap_exchanges(coap)
        for name, ex in (("http", h_ex), ("coap", c_ex)):
            await window(ex, n, 0.5)
            best = (0.0, 0.0)
            for _ in range(2):
                cpu = cpu_seconds(pid)
                started = time.monotonic()
                trips = await window(ex, n, seconds)
                rate = trips / (time.monotonic() - started)
                if rate > best[0]:
                    best = (rate, (cpu_seconds(pid) - cpu) / trips * 1e6)
            rows.append({"devices": n, "transport": name, "rt_s": round(best[0]),
                         "server_cpu_us": round(best[1])})  # fmt: skip
        h_close()
        await c_close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        publish(root, f"oci-layout://{root / 'oci' / 'fw' / 'app'}:latest", "1.0", IMAGE)
        (root / "fleet").mkdir()
        docs = ["kind: Application\nmetadata: {name: app}\n"
                "spec: {firmware: {container: {image: fw/app:latest}}}\n"]  # fmt: skip
        docs += [
            f"metadata: {{name: d{i}, application: app}}\n"
            f"spec: {{credentials: {{credentials: [{{pass: pw-{i}}}]}}}}\n"
            for i in range(DEVICES)
        ]
        (root / "fleet" / "f.yaml").write_text("---\n".join(docs))
        http, coap = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
        env = {**os.environ, "PYTHONPATH": str(REPO), "AJOUR_DELIVERY_STATUS_TOKEN": "s",
               "AJOUR_DELIVERY_EVENTS_TOKEN": "e"}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "delivery.cli", "serve", "--fleet", str(root / "fleet"),
             "--registry", f"oci-layout://{root / 'oci'}", "--http", f"127.0.0.1:{http}",
             "--coap", f"127.0.0.1:{coap}"],
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            while "serving CoAP" not in proc.stderr.readline():
                pass
            rows = asyncio.run(measure(proc.pid, http, coap, args.seconds))
        finally:
            proc.terminate()
            proc.communicate(timeout=20)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| devices | transport | rt/s | server CPU µs / round trip |")
    print("|---:|---|---:|---:|")
    for row in rows:
        print(f"| {row['devices']} | {row['transport']} | {row['rt_s']:,} |"
              f" {row['server_cpu_us']:,} |")  # fmt: skip


if __name__ == "__main__":
    main()
