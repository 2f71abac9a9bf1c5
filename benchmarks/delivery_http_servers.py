"""The HTTP delivery benchmark's responders, each in a process of its own.

* ``transport``: the real ``HttpTransport`` (h11 on asyncio, handlers on its thread pool)
  with the real ``Worker``, devices authenticated by password;
* ``bare``: the same server (``delivery.httpd.Server``) with a trivial app that reads the
  body on the same thread pool and answers a constant Write of the worker's size: the
  baseline, what the server itself costs;
* ``legacy``: the transport before issue 12 (``ThreadingHTTPServer``, a thread per
  connection; ``benchmarks/delivery_http_legacy.py``) with the same worker and passwords;
* ``uvicorn``: a plain ASGI app answering the same constant on uvicorn (h11, asyncio), the
  candidate the server was chosen against; no thread-pool hop.
"""

from __future__ import annotations

import asyncio
import socket
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

from benchmarks.delivery_fixtures import APP
from benchmarks.delivery_responders import echo_payload, handled, make_worker

KINDS = ("transport", "bare", "legacy", "uvicorn")
PASSWORD = "bench-pw"


def fleet_with_passwords(root: Path, devices: int) -> None:
    """Rewrite ``prepare``'s fleet: the same devices, each with the password PASSWORD."""
    docs = [
        f"kind: Application\nmetadata: {{name: {APP}}}\n"
        "spec: {firmware: {container: {image: fw/app:latest}}}\n"
    ]
    docs += [
        f"kind: Device\nmetadata: {{name: dev{i}, application: {APP}}}\n"
        f"spec: {{credentials: {{credentials: [{{pass: {PASSWORD}}}]}}}}\n"
        for i in range(devices)
    ]
    (root / "fleet" / "fleet.yaml").write_text("---\n".join(docs), encoding="utf-8")


def _free_socket() -> socket.socket:
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only for such a
    # listener (socket.create_server's proto 0 gets none: uvicorn then waits ~44 ms per
    # answer for a delayed ACK, since it writes the head and the body separately)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def _serve_uvicorn(payload: bytes, conn: Connection) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = [
            (b"content-type", b"application/cbor"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    sock = _free_socket()
    config = uvicorn.Config(
        app, http="h11", loop="asyncio", lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    conn.send(("ready", sock.getsockname()[1]))

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        server.should_exit = True
        await task

    asyncio.run(main())
    conn.send({})


def serve(kind: str, root: str, conn: Connection) -> None:
    """A responder process: serve until told to stop, then report the worker's counters."""
    payload = echo_payload((Path(root) / "fw.bin").read_bytes())
    if kind == "uvicorn":
        _serve_uvicorn(payload, conn)
        return
    stop: Any
    worker = None
    if kind == "bare":
        from delivery.http_exchange import Accept, Limits, Request, Response
        from delivery.httpd import Server

        answer = Response(200, payload, "application/cbor")

        class Bare:
            def route(self, request: Request) -> Response | Accept:
                return Accept(4096, lambda _r, _b: answer)

        server = Server(Bare(), _free_socket(), Limits())
        server.start()
        port = server.address[1]
        stop = server.stop
    elif kind == "transport":
        from delivery.http import HttpSettings, HttpTransport

        worker = make_worker(Path(root))
        transport = HttpTransport(worker, HttpSettings(port=0, status_token="s", events_token="e"))
        transport.start()
        port, stop = transport.port, transport.stop
    else:
        from benchmarks.delivery_http_legacy import HttpSettings as OldSettings
        from benchmarks.delivery_http_legacy import HttpTransport as OldTransport

        worker = make_worker(Path(root))
        old = OldTransport(worker, OldSettings(port=0))
        old.start()
        port, stop = old.server.server_address[1], old.stop
    conn.send(("ready", port))
    conn.recv()
    stop()
    conn.send({"handled": handled(worker)[0] if worker else 0})


class Responder:
    def __init__(self, ctx: SpawnContext, kind: str, root: Path) -> None:
        self.kind = kind
        self.conn, child = ctx.Pipe()
        self.proc: SpawnProcess = ctx.Process(
            target=serve, args=(kind, str(root), child), daemon=True
        )
        self.proc.start()
        child.close()
        if not self.conn.poll(60):
            self.close()
            raise SystemExit(f"the {kind} responder did not start")
        _, self.port = self.conn.recv()

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def close(self) -> dict[str, Any]:
        final: dict[str, Any] = {}
        try:
            self.conn.send("stop")
            if self.conn.poll(20):
                final = self.conn.recv()
        except (OSError, EOFError):
            pass
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()
        return final
