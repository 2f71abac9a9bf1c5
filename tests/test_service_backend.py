"""The local backend under stress: database hiccups, cancels that free the queue, prompt stops,
and browsers posting from other sites (found by review; each test failed before its fix).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ajour_build.lifecycle import Build
from ajour_build.plan import PlannedBuild
from ajour_build.runner.host import HostEngine
from ajour_build.runner.state_dir import StateDir
from ajour_build.service.backends.backend import BackendError
from ajour_build.service.backends.local import LocalBackend, LogSink
from ajour_build.service.records import Records, RecordsError
from ajour_build.service.scheduler import FleetSource, Scheduler
from tests.test_service import make


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    found = Records.sqlite(tmp_path / "builds.db")
    yield found
    found.close()


def new(records: Records) -> Build:
    return records.create(
        Build.queued(
            name="ajour-a-1", spec_hash="h" * 64, application="a", consumers=("a",),
            reason="test", git_url="file:///x", revision="main", publish_to="dir:///x",
        )
    )  # fmt: skip


def until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_database_hiccup_does_not_kill_the_worker(
    tmp_path: Path, records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(records, StateDir(tmp_path / "state"), engine=HostEngine(), workers=1)
    backend.start()
    real = records.transition
    down = {"now": True, "failed": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if down["now"]:
            down["failed"] += 1
            raise RecordsError("build records unavailable (database is locked)")
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "transition", flaky)
    first = new(records)
    backend.submit(first, None)  # type: ignore[arg-type]
    # the worker fails to mark it running, then fails to mark it failed: both raise
    until(lambda: down["failed"] >= 2, "the worker to meet the database outage")
    down["now"] = False
    assert backend.health() == "ok"
    second = new(records)
    backend.submit(second, None)  # type: ignore[arg-type]
    # the same worker takes the next build (and fails it: there is no plan to run)
    until(lambda: records.require(second.id).state == "failed", "the next build to end")
    assert "internal error" in (records.require(second.id).failure or "")
    backend.stop()


def test_cancelled_builds_free_their_queue_slot(tmp_path: Path, records: Records) -> None:
    backend = LocalBackend(
        records, StateDir(tmp_path / "state"), engine=HostEngine(), queue_size=2, workers=1
    )  # not started: everything stays queued
    builds = [new(records), new(records)]
    for build in builds:
        backend.submit(build, None)  # type: ignore[arg-type]
    assert backend.free_slots() == 0
    for build in builds:
        assert backend.cancel(build.id)
        assert records.require(build.id).state == "cancelled"
    assert backend.free_slots() == 2
    backend.submit(new(records), None)  # type: ignore[arg-type]
    assert backend.free_slots() == 1


def test_stop_is_prompt_with_a_full_queue(tmp_path: Path, records: Records) -> None:
    backend = LocalBackend(
        records, StateDir(tmp_path / "state"), engine=HostEngine(), queue_size=2, workers=2
    )
    for _ in range(2):
        backend.submit(new(records), None)  # type: ignore[arg-type]
    backend.start()
    started = time.monotonic()
    backend.stop()
    assert time.monotonic() - started < 5
    assert all(not t.is_alive() for t in backend._threads)


def test_a_restart_interrupts_running_builds_instead_of_cancelling(tmp_path: Path) -> None:
    h = make(tmp_path)
    h.commit({"delay": "60\n"})
    with h.running(), h.client() as c:
        build = c.post("/api/v1/applications/fw/devices/d1/trigger").json()["triggered"][0]
        h.wait_log(build["id"], "tick 1")
    with h.running(), h.client() as c:
        after = c.get(f"/api/v1/builds/{build['id']}").json()
    assert after["state"] == "interrupted"
    assert "service stopped" in after["failure"]


def test_browsers_cannot_post_from_other_sites(tmp_path: Path) -> None:
    h = make(tmp_path)
    with h.running(), h.client() as c:
        evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        api = c.post("/api/v1/applications/fw/trigger", headers=evil)
        assert api.status_code == 403 and "cross-site" in api.json()["error"]
        form = c.post(
            "/actions/trigger",
            data={"application": "fw"},
            headers={**evil, "Accept": "text/html"},
        )
        assert form.status_code == 403 and "another site" in form.text
        same = c.post(
            "/actions/trigger",
            data={"application": "plain"},
            headers={"Origin": h.url, "Sec-Fetch-Site": "same-origin", "Accept": "text/html"},
        )
        assert same.status_code == 200 and "Nothing to build" in same.text
        assert c.get("/api/v1/builds").json()["count"] == 0
        with httpx.Client(base_url=h.url) as anon:
            refused = anon.post("/actions/trigger", data={"application": "fw"})
            assert refused.status_code == 401


class SecondSubmitFails:
    """A Backend (the protocol, not a mock of a service) whose second submit is refused."""

    name = "second-fails"
    durable = False

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def health(self) -> str:
        return "ok"

    def free_slots(self) -> int | None:
        return None

    def submit(self, build: Build, planned: PlannedBuild) -> None:
        if self.submitted:
            raise BackendError("the Kubernetes API at https://k8s.invalid is unreachable")
        self.submitted.append(build.id)

    def cancel(self, build_id: str) -> bool:
        self.cancelled.append(build_id)
        return True


def test_a_trigger_is_all_or_nothing_when_a_backend_fails_midway(
    tmp_path: Path, records: Records
) -> None:
    h = make(tmp_path)
    backend = SecondSubmitFails()
    scheduler = Scheduler(FleetSource([tmp_path / "fleet"]), h.config(), records, backend)
    with pytest.raises(BackendError, match="unreachable"):
        scheduler.trigger("fw")  # two distinct builds: fw (+d1) and d2
    (first,) = backend.submitted
    assert backend.cancelled == [first]
    states = {b.id: (b.state, b.failure or "") for b in records.find()}
    assert len(states) == 2
    assert states.pop(first) == (
        "cancelled",
        "rolled back: another build of the same trigger could not start"
        " (the Kubernetes API at https://k8s.invalid is unreachable)",
    )
    ((state, failure),) = states.values()
    assert state == "failed" and failure.startswith("not started: the Kubernetes API")


def test_a_log_without_end_is_capped_in_the_records(records: Records) -> None:
    build_id = new(records).id
    sink = LogSink(records, build_id, limit=500)
    for i in range(5000):
        sink.line(f"line {i}")
    sink.flush()
    stored = [line for _, line in records.logs(build_id, 0, 10_000)]
    assert stored[:500] == [f"line {i}" for i in range(500)]
    assert len(stored) == 501 and "log truncated at 500 lines" in stored[-1]
    assert sink.dropped == 4500
