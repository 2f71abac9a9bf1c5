"""The trigger benchmark's servers: the fleet on disk, the service on ``QueueOnlyBackend``,
the bare FastAPI baseline, the drainer, and the forked processes that run them."""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, ForkProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ajour_build.config import load_config
from ajour_build.lifecycle import Build
from ajour_build.plan import PlannedBuild
from ajour_build.server import create_app
from ajour_build.service.records import Records
from ajour_build.service.scheduler import FleetSource, Scheduler
from ajour_build.service.state import Service
from tests.registry import free_port

HOST = "127.0.0.1"
SECRET = "bench-webhook-secret"
TOKEN = "bench-token"
DEVICES_PER_APP = 4
DRAIN_INTERVAL_S = 0.01
UVICORN = {"log_level": "warning", "access_log": False, "lifespan": "on"}  # see serve_main

CONFIG_YAML = f"""\
registry:
  prefix: registry.example.com/ajour
allowed_applications: ["*"]
sources: {{allow_local: true}}
service:
  tokens: [{TOKEN}]
  webhooks: {{github: {SECRET}}}
"""

APP_YAML = """\
kind: Application
metadata: {{name: {app}}}
spec:
  firmware:
    container:
      image: {app}:latest
      build:
        image: arm-gcc
        source: {{git: {{uri: "{uri}", rev: main}}}}
        args: [--board, mps2-an385]
        artifact: {{path: build/{app}.bin}}
"""


@dataclass
class QueueOnlyBackend:
    """A Backend that runs nothing: ``submit`` accepts the build and returns at once.

    The record stays ``queued`` (the drainer process moves it on). No limit on the queue.
    """

    name: str = "queue-only"
    durable: bool = False

    def start(self) -> None:
        return None

    def health(self) -> str:
        return "ok"

    def free_slots(self) -> int | None:
        return None

    def submit(self, build: Build, planned: PlannedBuild) -> None:
        return None

    def cancel(self, build_id: str) -> bool:
        return False

    def stop(self) -> None:
        return None


def app_name(a: int) -> str:
    return f"app-{a:03d}"


def app_uri(a: int) -> str:
    return f"file:///srv/git/firmware-{a:03d}.git"


def write_fleet(root: Path, apps: int, devices: int = DEVICES_PER_APP) -> None:
    """``root/ajour.yaml`` and ``root/fleet/<app>.yaml``: an Application and its Devices."""
    (root / "fleet").mkdir(parents=True, exist_ok=True)
    (root / "ajour.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    for a in range(apps):
        app = app_name(a)
        docs = [APP_YAML.format(app=app, uri=app_uri(a))]
        docs += [
            f"kind: Device\nmetadata: {{name: {app}-dev-{d}, application: {app}}}\n"
            for d in range(devices)
        ]
        (root / "fleet" / f"{app}.yaml").write_text("---\n".join(docs), encoding="utf-8")


def database(root: Path) -> Path:
    return root / "state" / "service" / "builds.db"


def make_service(root: Path) -> Service:
    """Wired as ``assemble`` wires it, with the QueueOnlyBackend."""
    config = load_config(root / "ajour.yaml", env={})
    records = Records.sqlite(database(root))
    backend = QueueOnlyBackend()
    scheduler = Scheduler(FleetSource([root / "fleet"]), config, records, backend)
    return Service(config, records, backend, scheduler)


def baseline_app() -> FastAPI:
    app = FastAPI(title="baseline")

    @app.post("/noop", status_code=202)
    async def noop(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({}, status_code=202)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_main(kind: str, root: str, port: int) -> None:
    """Child process: the service or the baseline under uvicorn, until SIGTERM."""
    app = create_app(make_service(Path(root))) if kind == "service" else baseline_app()
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", access_log=False, lifespan="on"
    )  # as `ajour-build serve` runs it (plus lifespan="on": the service needs its startup)
    uvicorn.Server(config).run()


def drain_main(db: str, interval: float, stop: Event, out: Connection) -> None:
    """Child process: move queued builds to running, as a worker picking them up would."""
    link = sqlite3.connect(db, timeout=5, isolation_level=None)
    out.send("ready")
    cpu = time.process_time()
    polls = moved = deepest = 0
    while not stop.is_set():
        try:
            (depth,) = link.execute("SELECT count(*) FROM builds WHERE state = 'queued'").fetchone()
        except sqlite3.OperationalError:  # the service has not created its tables yet
            depth = 0
        if depth:
            moved += link.execute(
                "UPDATE builds SET state = 'running' WHERE state = 'queued'"
            ).rowcount
            deepest = max(deepest, depth)
        polls += 1
        stop.wait(interval)
    link.close()
    cpu = time.process_time() - cpu
    out.send({"polls": polls, "moved": moved, "max_queue_depth": deepest, "cpu_s": cpu})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """A server under test: where it listens and what a good answer is."""

    kind: str  # "service" or "baseline"
    url: str
    path: str
    pid: int
    counter: Iterator[int]
    answered: list[int] = field(default_factory=list)  # push indexes answered 202


def start_server(ctx: ForkContext, kind: str, root: Path) -> tuple[ForkProcess, Target]:
    port = free_port()
    proc = ctx.Process(target=serve_main, args=(kind, str(root), port), daemon=True)
    proc.start()
    assert proc.pid is not None
    path = "/webhooks/github" if kind == "service" else "/noop"
    return proc, Target(kind, f"http://{HOST}:{port}", path, proc.pid, itertools.count())


def wait_ready(proc: ForkProcess, target: Target) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{target.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not proc.is_alive():
            raise SystemExit(f"the {target.kind} server did not start")
        time.sleep(0.05)


@contextmanager
def processes(ctx: ForkContext, root: Path) -> Iterator[tuple[Target, Target, dict[str, Any]]]:
    """The service, the baseline and the drainer, forked (no thread runs yet in this
    process), stopped at the end; yields the drainer's report."""
    database(root).parent.mkdir(parents=True, exist_ok=True)
    stop = ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    drain = ctx.Process(
        target=drain_main, args=(str(database(root)), DRAIN_INTERVAL_S, stop, send), daemon=True
    )
    drain.start()
    servers = [start_server(ctx, kind, root) for kind in ("service", "baseline")]
    report: dict[str, Any] = {}
    try:
        for proc, target in servers:
            wait_ready(proc, target)
        if not receive.poll(60) or receive.recv() != "ready":
            raise SystemExit("the drainer did not start")
        yield servers[0][1], servers[1][1], report
    finally:
        stop.set()
        if receive.poll(30):
            report.update(receive.recv())
        for proc in (drain, *(proc for proc, _ in servers)):
            proc.terminate()
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
