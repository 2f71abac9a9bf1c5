"""Bounds of the build service's local backend, over real HTTP: a registry that stalls
cannot hold a worker, a cancel, or the queue; /readyz names
what is stuck; a builder that prints without end leaves a bounded log.

The service runs under uvicorn on loopback with host-mode builds against a real git remote
(tests/service.py); the stalled registry is a real TCP server on loopback that drips
its answer a byte at a time (tests/stall.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ajour_build.service.backends.watchdog import Watchdog
from tests.firmware import built_app, fake_builder
from tests.service import BUILDER, TOKEN, Harness
from tests.stall import Stalled, dripping, silent

CONFIG = f"""\
allowed_applications: [fw, fw2]
sources: {{allow_local: true}}
registry: {{prefix: "127.0.0.1:PORT/ajour", insecure: true}}
service:
  tokens: [{TOKEN}]
  runner: host
  workers: 1
  publish_timeout: 3s
  stuck_after: 1s
"""


@pytest.fixture
def stalled() -> Iterator[Stalled]:
    with dripping() as server:
        yield server


def harness(tmp_path: Path, config: str, builder: str = BUILDER) -> Harness:
    h = Harness(tmp_path, config)
    fake_builder(tmp_path / "builders", "fake", builder)
    (tmp_path / "fleet").mkdir()
    fleet = "---\n".join(built_app(name, h.remote_uri) for name in ("fw", "fw2"))
    (tmp_path / "fleet" / "fleet.yaml").write_text(fleet)
    h.commit({"main.c": "int x;\n"})
    return h


@pytest.mark.timeout(120)
def test_a_stalled_registry_cannot_hold_a_cancel_the_queue_or_readiness(
    tmp_path: Path, stalled: Stalled
) -> None:
    h = harness(tmp_path, CONFIG.replace("PORT", str(stalled.port)))
    with h.running(), h.client() as c:
        first = c.post("/api/v1/applications/fw/trigger").json()["triggered"][0]["id"]
        until = time.monotonic() + 30
        while not stalled.connections:  # built; now its publish is blocked on the registry
            assert time.monotonic() < until, c.get(f"/api/v1/builds/{first}").json()
            time.sleep(0.1)
        h.wait_log(first, "step: publish to oci://")  # the log shows where it waits
        second = c.post("/api/v1/applications/fw2/trigger").json()["triggered"][0]["id"]
        assert c.get(f"/api/v1/builds/{second}").json()["state"] == "queued"

        asked = time.monotonic()
        assert c.post(f"/api/v1/builds/{first}/cancel").status_code == 200
        cancelled = h.wait(first, ("cancelled", "failed", "succeeded"), timeout=10)
        assert cancelled["state"] == "cancelled", cancelled
        assert time.monotonic() - asked < 3, "the cancel of a stalled publish took too long"
        assert "cancelled during publish" in c.get(f"/api/v1/builds/{first}/logs").text

        # the queued build runs; its own publish stalls too, and is given up at the deadline
        h.wait(second, ("running",), timeout=10)
        failed = h.wait(second, ("failed", "succeeded", "cancelled"), timeout=20)
        assert failed["state"] == "failed", failed
        assert failed["failure"].startswith("publish: given up after 3s without an end")

        # both publishes are still blocked in their threads: /readyz says so, and by build
        deadline = time.monotonic() + 15
        while True:
            ready = c.get("/readyz")
            if second in ready.text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ready.status_code == 503, ready.text
        backend = ready.json()["checks"]["backend"]
        assert f"the publish of build {first} was given up but is still blocked" in backend
        assert f"the publish of build {second} was given up but is still blocked" in backend


@pytest.mark.timeout(120)
def test_a_cancel_stops_a_clone_from_a_git_server_that_never_answers(tmp_path: Path) -> None:
    with silent() as git_server:
        h = harness(tmp_path, CONFIG.replace("PORT", "5000"))
        uri = f"https://127.0.0.1:{git_server.port}/acme/firmware.git"
        (tmp_path / "fleet" / "fleet.yaml").write_text(built_app("fw", uri))
        with h.running(), h.client() as c:
            build = c.post("/api/v1/applications/fw/trigger").json()["triggered"][0]["id"]
            until = time.monotonic() + 10
            while not git_server.connections:  # git is connected, and waits for an answer
                assert time.monotonic() < until, "git never reached the server"
                time.sleep(0.1)
            asked = time.monotonic()
            assert c.post(f"/api/v1/builds/{build}/cancel").status_code == 200
            done = h.wait(build, ("cancelled", "failed", "succeeded"), timeout=10)
            assert done["state"] == "cancelled", done
            assert time.monotonic() - asked < 3, "the cancel of a stalled clone took too long"
            ready = c.get("/readyz")
            assert ready.status_code == 200, ready.text


# a builder that prints without end: one 64 MiB line, then 600 lines of 8 KiB
FLOOD = """\
head -c 67108864 /dev/zero | tr '\\0' x
echo
i=0
while [ "$i" -lt 600 ]; do head -c 8192 /dev/zero | tr '\\0' y; echo; i=$((i + 1)); done
mkdir -p out
printf fw > out/fw.bin
"""
FLOOD_CONFIG = f"""\
allowed_applications: [fw, fw2]
sources: {{allow_local: true}}
service:
  tokens: [{TOKEN}]
  runner: host
  publish: false
  log_line_bytes: 4096
  log_bytes: 1048576
"""


@pytest.mark.timeout(120)
def test_a_flooding_builder_leaves_a_bounded_log_with_a_note(tmp_path: Path) -> None:
    h = harness(tmp_path, FLOOD_CONFIG, FLOOD)
    with h.running(), h.client() as c:
        build = c.post("/api/v1/applications/fw/trigger").json()["triggered"][0]["id"]
        done = h.wait(build, ("succeeded", "failed", "cancelled"), timeout=60)
        assert done["state"] == "succeeded", done
        logs = c.get(f"/api/v1/builds/{build}/logs").text
    note = "[ajour] log truncated: builder output past 1048576 bytes is dropped"
    assert note in logs.splitlines()
    first = next(line for line in logs.splitlines() if line.startswith("x"))
    assert first.startswith("x" * 4000) and first.endswith(" [ajour: line cut; build.log has more]")
    assert len(logs) < 1048576 + 64 * 1024  # the records hold no more than the file
    on_disk = tmp_path / "state" / "builds" / done["backendRef"] / "build.log"
    data = on_disk.read_bytes()
    dropped = 64 * 1024 * 1024 - 4096
    expected = f"\n{'x' * 4096} [ajour: line truncated, {dropped} more bytes dropped]\n"
    assert expected in data.decode()
    own = sum(len(line) + 1 for line in data.decode().splitlines() if line.startswith("[ajour] "))
    assert len(data) <= 1048576 + own + 1, len(data)
    assert note in data.decode()


def test_readiness_names_a_worker_busy_past_its_step_deadline() -> None:
    watchdog = Watchdog(stuck_after=0.3)
    started, release = threading.Event(), threading.Event()
    stepped: list[float] = []

    def worker() -> None:
        stepped.append(time.monotonic())
        watchdog.step("b-1", "clone", 0.2)  # a step that ignores its deadline
        started.set()
        release.wait(10)
        watchdog.idle()

    thread = threading.Thread(target=worker, name="ajour-build-7")
    thread.start()
    started.wait(5)
    early = watchdog.problems()
    # within its deadline, and within stuck_after past it (0.5 s), it is not named; a test
    # thread that ran late may have looked later: then it proves nothing
    assert early == [] or time.monotonic() - stepped[0] >= 0.5, early
    time.sleep(0.7)
    problems = watchdog.problems()
    release.set()
    thread.join(5)
    assert len(problems) == 1
    assert problems[0].startswith("worker ajour-build-7 is stuck in the clone step of build b-1:")
    assert watchdog.problems() == []  # idle again: ready again
