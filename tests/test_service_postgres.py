"""The build records on a real PostgreSQL server: the same code, chosen by URL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ajour_build.lifecycle import Build, BuildState
from ajour_build.service.records import Query, Records, RecordsError
from tests.postgres import run_postgres
from tests.test_service import make


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with run_postgres() as found:
        yield found


def build(records: Records, app: str = "fw", consumers: tuple[str, ...] = ("fw",)) -> str:
    new = Build.queued(
        name="ajour-fw-1", spec_hash="a" * 64, application=app, consumers=consumers,
        reason="t", git_url="file:///x", revision="main",
    )  # fmt: skip
    return records.create(new).id


def test_records_on_postgresql(url: str) -> None:
    records = Records(url)
    try:
        first = build(records, consumers=("fw", "fw/d1"))
        second = build(records, "other", ("other/x",))
        assert records.transition(first, BuildState.RUNNING) is not None
        records.append_log(first, ["line one", "x" * 10_000])
        assert (
            records.transition(first, BuildState.SUCCEEDED, digest="sha256:" + "0" * 64) is not None
        )
        assert records.transition(first, BuildState.FAILED) is None  # the first end wins
        done = records.require(first)
        assert done.state == "succeeded" and done.consumers == ("fw", "fw/d1")
        assert done.started is not None and done.started.tzinfo is not None
        assert [b.id for b in records.find(Query(device="d1"))] == [first]
        assert [b.id for b in records.find(Query(states=("queued",)))] == [second]
        future = datetime.now(UTC) + timedelta(days=1)
        assert records.find(Query(since=future)) == []
        assert records.queued_by_spec() == {"a" * 64: second}
        lines = records.logs(first)
        assert [len(line) for _, line in lines] == [8, 4096]
        assert records.remember_delivery("github:id:1") == "new"
        assert records.remember_delivery("github:id:1") == "pending"  # IntegrityError on PG
        records.forget_delivery("github:id:1")
        assert records.remember_delivery("github:id:1") == "new"
        records.settle_delivery("github:id:1")
        assert records.remember_delivery("github:id:1") == "done"
        assert records.remember_delivery("github:id:2") == "new"
        assert records.drop_pending_deliveries() == 1
        assert records.remember_delivery("github:id:2") == "new"
        assert [b.id for b in records.interrupt_active()] == [second]
        assert records.counts()["interrupted"] == 1
    finally:
        records.close()


def test_the_service_on_postgresql_survives_a_restart(url: str, tmp_path: Path) -> None:
    h = make(tmp_path)
    h.config_text += f"  database: '{url}'\n"
    h.commit({"a": "1"}, "beta")
    with h.running(), h.client() as c:
        started = c.post("/api/v1/applications/fw/devices/d2/trigger", json={"version": "4"})
        build_id = started.json()["triggered"][0]["id"]
        assert h.wait(build_id, ("succeeded", "failed"))["state"] == "succeeded"
    assert not (tmp_path / "state" / "service" / "builds.db").exists()  # not SQLite
    with h.running(), h.client() as c:
        again = c.get(f"/api/v1/builds/{build_id}").json()
        logs = c.get(f"/api/v1/builds/{build_id}/logs").text
    assert again["state"] == "succeeded" and again["version"] == "4"
    assert "building 4 at" in logs


def test_a_database_that_is_down_is_a_clear_error() -> None:
    with pytest.raises(RecordsError) as failure:
        Records("postgresql+psycopg://ajour:s3cret-pw@127.0.0.1:1/postgres")
    message = str(failure.value)
    assert "cannot open the build records" in message and "127.0.0.1:1" in message
    assert "s3cret-pw" not in message  # the password never reaches messages
