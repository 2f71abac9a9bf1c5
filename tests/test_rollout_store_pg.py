"""The rollout store shared by workers: races between stores, a PostgreSQL server that stops
and comes back, passwords kept out of messages, and the choice of store by location.

Every store is a real one: SQLite files and a real PostgreSQL server on loopback
(tests/postgres.py). Each thread holds its own store (its own connection), as a worker on
another machine would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner

from ajour_build.core.fleet import load_fleet
from ajour_build.core.rollout import model
from ajour_build.core.rollout.model import DeviceRecord, Outcome, State
from ajour_build.core.spec.rollout import RolloutPolicy
from delivery.device import SimulatedDevice
from delivery.errors import DeliveryError
from delivery.protocol import Sync, Wait, Write, decode_command, encode_status
from delivery.rollout_db import open_rollout_db
from delivery.rollout_store import StoreUnavailable
from delivery.rollout_store_pg import PostgresRolloutStore
from delivery.rollouts import Rollouts
from delivery.simulator import HttpDeviceLink
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.conftest import REPO
from tests.postgres import WORKER, WORKER_PASSWORD, Postgres, RolloutDb, running_postgres
from tests.test_rollout_flow import serve
from tests.test_rollouts import IMAGE_TWO, Setup, ask
from tests.test_sources import publish

POLICY = RolloutPolicy.model_validate({"waves": [{"percent": 100}]})
T = TypeVar("T")


def race(count: int, work: Callable[[int], T]) -> list[T]:
    """``work(i)`` in ``count`` threads released together; their results (or the first
    exception)."""
    gate = threading.Barrier(count)
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            gate.wait(10)
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    if errors:
        raise errors[0]
    return [results[i] for i in range(count)]


def test_workers_racing_begin_create_each_rollout_once(rollout_db: RolloutDb) -> None:
    """Six workers see the first version, then a new one, at the same moment (on a new
    database: they also create the schema together)."""
    stores = [rollout_db.open() for _ in range(6)]
    first = race(6, lambda i: stores[i].begin("app", "1.0", POLICY, 100.0 + i))
    assert {(r.seq, r.to_version, r.state) for r in first} == {(1, "1.0", State.COMPLETED)}
    second = race(6, lambda i: stores[i].begin("app", "1.1", POLICY, 200.0 + i))
    assert {(r.seq, r.from_version, r.to_version) for r in second} == {(2, "1.0", "1.1")}
    assert len({r.created for r in second}) == 1, "one worker created it; the others read it"
    history = [(r.seq, r.to_version, r.state) for r in stores[0].history("app")]
    assert history == [(1, "1.0", State.COMPLETED), (2, "1.1", State.RUNNING)]


def test_concurrent_saves_of_one_revision_exactly_one_wins(rollout_db: RolloutDb) -> None:
    stores = [rollout_db.open() for _ in range(6)]
    stores[0].begin("app", "1.0", POLICY, 1.0)
    current = stores[0].begin("app", "1.1", POLICY, 2.0)
    won = race(6, lambda i: stores[i].save(model.pause(current, f"paused by worker {i}")))
    assert won.count(True) == 1
    latest = stores[0].latest("app")
    assert latest is not None and latest.revision == current.revision + 1
    assert latest.reason == f"paused by worker {won.index(True)}"


def test_a_follower_never_skips_an_outcome_committed_late(postgres_server: Postgres) -> None:
    """Outcome ids are taken in one order and committed in another when two workers record
    at once; a worker following the log by id must still see both. A trigger makes the
    first insert take 1 s after its id was taken."""
    database = postgres_server.database(owner=WORKER)
    dsn = postgres_server.dsn(database, WORKER, WORKER_PASSWORD)
    slow, fast, follower = (PostgresRolloutStore(dsn) for _ in range(3))
    try:
        slow.begin("app", "1.0", POLICY, 1.0)
        seq = slow.begin("app", "1.1", POLICY, 2.0).seq
        postgres_server.execute(  # inserts of device "slow" sleep 1 s after taking their id
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.device = 'slow' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$",
            "CREATE TRIGGER slow_insert BEFORE INSERT ON rollout_outcomes"
            " FOR EACH ROW EXECUTE FUNCTION slow_insert()",
            database=database,
        )
        record = DeviceRecord(Outcome.SWAPPED, 0, 3.0, "1.0")
        threads = [
            threading.Thread(target=slow.record, args=("app", seq, "slow", record)),
            threading.Thread(target=fast.record, args=("app", seq, "fast", record)),
        ]
        threads[0].start()
        time.sleep(0.2)  # the slow insert holds its id
        threads[1].start()
        seen: dict[int, str] = {}
        last, deadline = 0, time.monotonic() + 15
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            for log_id, device, _ in follower.records("app", seq, last):
                seen[log_id], last = device, log_id
            time.sleep(0.05)
        for log_id, device, _ in follower.records("app", seq, last):
            seen[log_id] = device
        assert sorted(seen.values()) == ["fast", "slow"], seen
    finally:
        for store in (slow, fast, follower):
            store.close()


def test_superseding_does_not_undo_a_save_in_flight(postgres_server: Postgres) -> None:
    """Another worker pauses rollout 2 (its transaction not committed yet) while this one
    starts rollout 3: the superseded rollout gets the revision after the pause, so the other
    worker cannot later save over it from the paused revision."""
    import psycopg

    database = postgres_server.database(owner=WORKER)
    store = PostgresRolloutStore(postgres_server.dsn(database, WORKER, WORKER_PASSWORD))
    try:
        store.begin("app", "1.0", POLICY, 1.0)
        running = store.begin("app", "1.1", POLICY, 2.0)
        paused = model.pause(running, "paused by the other worker")
        begun: list[model.Rollout] = []
        with psycopg.connect(postgres_server.dsn(database)) as other:  # a transaction
            other.execute(
                "UPDATE rollouts SET state=%s, reason=%s, revision=%s"
                " WHERE application='app' AND seq=2 AND revision=%s",
                (paused.state.value, paused.reason, paused.revision, running.revision),
            )
            starter = threading.Thread(
                target=lambda: begun.append(store.begin("app", "1.2", POLICY, 3.0))
            )
            starter.start()
            time.sleep(0.3)  # begin waits for the other worker's row
            assert starter.is_alive()
        starter.join(10)  # the other worker committed when its block ended
        assert [r.seq for r in begun] == [3]
        second = store.history("app")[1]
        assert second.state is State.SUPERSEDED and second.revision == paused.revision + 1
        assert not store.save(model.resume(paused, 4.0)), "saved over the superseded rollout"
        assert store.history("app")[1].state is State.SUPERSEDED
    finally:
        store.close()


def test_a_stopped_database_means_wait_and_the_worker_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL stops mid-run: devices of the rollout application get Wait with the reason
    at once, the other application's devices are still answered, and the rollout goes on
    when the database is back. The password is in no status and no log line."""
    caplog.set_level(logging.INFO)
    s = Setup(tmp_path)
    with running_postgres() as server:
        server.password_role(WORKER, WORKER_PASSWORD)
        dsn = server.dsn(server.database(owner=WORKER), WORKER, WORKER_PASSWORD)
        store = PostgresRolloutStore(dsn, retry=0.3)
        targets = Targets(load_fleet([tmp_path / "fleet"]), s.registry, ttl=60)
        worker = Worker(targets, StatusStore(), rollouts=Rollouts(store, clock=s.clock))
        try:
            device, plain = SimulatedDevice(b"1.0"), SimulatedDevice(b"1.0")
            assert isinstance(ask(worker, device), Sync)  # the baseline
            s.publish_two(worker)
            server.stop()
            started = time.monotonic()
            for _ in range(3):  # the broken connection, then no server (twice)
                assert isinstance(ask(worker, device), Wait)
            waited = time.monotonic() - started
            row = worker.store.get("app", "d0") if worker.store else None
            assert row is not None and row.state == "Failed"
            assert row.detail.startswith(
                f"rollout database postgresql://***@127.0.0.1:{server.port}/"
            )
            assert "Connection refused" in row.detail
            assert isinstance(ask(worker, plain, "p1", "plain"), Write)  # no rollout: served
            assert waited < 2.0, f"devices waited {waited:.2f} s for a stopped database"
            server.start()
            time.sleep(0.4)  # past the retry interval
            assert isinstance(ask(worker, device), Write)  # rollout 2 goes on
            current = store.latest("app")
            assert current is not None and (current.seq, current.state) == (2, State.RUNNING)
            assert WORKER_PASSWORD not in row.detail
            assert WORKER_PASSWORD not in caplog.text
            assert "rollout database postgresql://***@" in caplog.text
        finally:
            store.close()


def test_a_database_that_never_answers_fails_within_the_connect_timeout() -> None:
    """A server that accepts the connection and says nothing (a stuck database): the call
    fails after connect_timeout, and the next ones at once for the retry interval."""
    from tests.stall import silent

    with silent() as stalled:
        store = PostgresRolloutStore(
            f"postgresql://worker:Pg-s3cret@127.0.0.1:{stalled.port}/db", connect_timeout=2
        )
        errors: list[BaseException] = []
        started = time.monotonic()
        caller = threading.Thread(target=lambda: errors.extend(calls(store)))
        caller.start()
        caller.join(15)
        elapsed = time.monotonic() - started
        assert not caller.is_alive(), "the store hung on a database that never answers"
        store.close()
    assert [type(e) for e in errors] == [StoreUnavailable, StoreUnavailable]
    assert "timeout" in str(errors[0]) and str(errors[1]) == str(errors[0])
    assert 1.5 < elapsed < 6, elapsed


def calls(store: PostgresRolloutStore, count: int = 2) -> list[BaseException]:
    """``count`` calls of ``store`` that must fail; what they raised."""
    found: list[BaseException] = []
    for _ in range(count):
        try:
            store.latest("app")
        except StoreUnavailable as exc:
            found.append(exc)
    return found


def test_a_locked_table_fails_within_the_statement_timeout(postgres_server: Postgres) -> None:
    """Another session holds the rollouts table: the call gives up after the timeout with
    the reason, and the same connection works once the lock is gone."""
    import psycopg

    database = postgres_server.database(owner=WORKER)
    dsn = postgres_server.dsn(database, WORKER, WORKER_PASSWORD)
    store = PostgresRolloutStore(dsn, timeout=0.5)
    try:
        store.begin("app", "1.0", POLICY, 1.0)
        with psycopg.connect(postgres_server.dsn(database)) as other:  # a transaction
            other.execute("LOCK TABLE rollouts IN ACCESS EXCLUSIVE MODE")
            errors: list[BaseException] = []
            started = time.monotonic()
            caller = threading.Thread(target=lambda: errors.extend(calls(store, 1)))
            caller.start()
            caller.join(10)
            assert not caller.is_alive(), "the store waited on a lock with no end"
            assert time.monotonic() - started < 3
        assert "canceling statement due to statement timeout" in str(errors[0])
        latest = store.latest("app")
        assert latest is not None and latest.to_version == "1.0"
    finally:
        store.close()


def test_a_frozen_server_is_cut_off_by_the_watchdog(postgres_server: Postgres) -> None:
    """The server process serving the store is stopped (SIGSTOP) mid-session: its kernel
    still acknowledges, so neither statement_timeout nor tcp_user_timeout can end the call.
    The client-side watchdog does, with a message that says so; once the process runs
    again the next call reconnects."""
    import psycopg

    database = postgres_server.database(owner=WORKER)
    dsn = postgres_server.dsn(database, WORKER, WORKER_PASSWORD)
    store = PostgresRolloutStore(dsn, timeout=0.5, retry=0.0)
    pid = 0
    try:
        store.begin("app", "1.0", POLICY, 1.0)
        with psycopg.connect(postgres_server.dsn(database)) as admin:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'ajour-delivery'"
                " AND datname = %s",
                (database,),
            ).fetchone()
        assert row is not None, "the store's session is not in pg_stat_activity"
        pid = int(row[0])
        os.kill(pid, signal.SIGSTOP)
        errors: list[BaseException] = []
        caller = threading.Thread(target=lambda: errors.extend(calls(store, 1)))
        caller.start()
        caller.join(30)
        assert not caller.is_alive(), "the store waited on a frozen server with no end"
        assert [type(e) for e in errors] == [StoreUnavailable]
        assert "no answer within 2s: the server is stuck" in str(errors[0]), errors[0]
        os.kill(pid, signal.SIGCONT)
        pid = 0
        latest = store.latest("app")  # a new connection, to a new server process
        assert latest is not None and latest.to_version == "1.0"
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        store.close()


def test_serve_waits_out_a_stopped_database(tmp_path: Path) -> None:
    """``ajour-delivery serve --rollout-db postgresql://…`` as installed: PostgreSQL stops
    while a new version appears; the rollout application's device gets Wait, the other
    application's device its update, and the rollout starts when PostgreSQL is back. The
    worker logs why, never the password, and stops cleanly."""
    s = Setup(tmp_path)
    procs: list[subprocess.Popen[bytes]] = []
    with running_postgres() as server:
        server.password_role(WORKER, WORKER_PASSWORD)
        dsn = server.dsn(server.database(owner=WORKER), WORKER, WORKER_PASSWORD)
        url = serve(tmp_path, dsn, procs)
        try:
            device, plain = SimulatedDevice(b"1.0"), SimulatedDevice(b"1.0")
            assert isinstance(over_http(url, "d0", device), Sync)  # the baseline
            server.stop()
            publish(tmp_path, s.url, "1.1", IMAGE_TWO)
            assert until_over_http(url, "d0", device, Wait)
            assert isinstance(over_http(url, "p1", plain, "plain"), Write)
            server.start()
            assert until_over_http(url, "d0", device, Write)  # rollout 2, wave 1
        finally:
            procs[0].send_signal(signal.SIGTERM)
            err = procs[0].communicate(timeout=15)[1].decode()
    assert procs[0].returncode == 0 and "Traceback" not in err, err
    assert "no rollout target for app/d0: rollout database postgresql://***@127.0.0.1:" in err
    assert WORKER_PASSWORD not in err


def over_http(url: str, name: str, device: SimulatedDevice, app: str = "app") -> object:
    """One status of ``device`` to the worker at ``url`` (retried while it starts)."""
    deadline = time.monotonic() + 15
    while True:
        link = HttpDeviceLink(url, app, name, None, 5)
        try:
            command = decode_command(link(encode_status(device.status())))
            device.apply(command)
            return command
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            link.close()


def until_over_http(url: str, name: str, device: SimulatedDevice, kind: type) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if isinstance(over_http(url, name, device), kind):
            return True
        time.sleep(0.1)
    return False


def test_the_password_is_in_no_message(postgres_server: Postgres) -> None:
    """Whatever fails, the DSN is shown without its password, and a driver message that
    quotes the password (libpq does, for a bad %-escape) has it replaced."""
    bad_escape = "postgresql://worker:%zzPg-s3cret@127.0.0.1:5432/db"
    with pytest.raises(DeliveryError) as caught:
        PostgresRolloutStore(bad_escape)
    assert "invalid percent-encoded token" in str(caught.value)
    assert "zzPg-s3cret" not in str(caught.value) and "postgresql://***@" in str(caught.value)

    wrong = postgres_server.dsn("postgres", WORKER, "Wrong-pw-7730")
    store = PostgresRolloutStore(wrong, connect_timeout=3)
    with pytest.raises(StoreUnavailable) as refused:
        store.latest("app")
    assert f'password authentication failed for user "{WORKER}"' in str(refused.value)
    assert "Wrong-pw-7730" not in str(refused.value)
    store.close()

    port = postgres_server.port + 1 if postgres_server.port < 65535 else 1
    query = f"postgresql://127.0.0.1:{port}/db?user=worker&password=Qp-s3cret%21"
    store = PostgresRolloutStore(query)
    with pytest.raises(StoreUnavailable) as down:
        store.latest("app")
    message = str(down.value)
    assert "password=***" in message and "Qp-s3cret" not in message, message
    store.close()

    keywords = f"host=127.0.0.1 port={port} user=worker password='Kv s3cret' dbname=db"
    store = PostgresRolloutStore(keywords)
    with pytest.raises(StoreUnavailable) as down:
        store.latest("app")
    assert "s3cret" not in str(down.value) and "s3cret" not in store.location, str(down.value)
    store.close()


def test_the_location_picks_the_store(tmp_path: Path, postgres_server: Postgres) -> None:
    sqlite = open_rollout_db(str(tmp_path / "r.db"))
    assert type(sqlite).__name__ == "SqliteRolloutStore"
    sqlite.close()
    for scheme in ("postgresql", "postgres", "PostgreSQL"):
        dsn = postgres_server.dsn(postgres_server.database(owner=WORKER), WORKER, WORKER_PASSWORD)
        store = open_rollout_db(dsn.replace("postgresql", scheme, 1))
        assert isinstance(store, PostgresRolloutStore)
        assert store.begin("app", "1.0", POLICY, 1.0).seq == 1
        store.close()
    with pytest.raises(DeliveryError) as caught:
        open_rollout_db("mysql://root:My-s3cret@db/rollouts")
    assert str(caught.value) == (
        "rollout database 'mysql://***@db/rollouts': unknown scheme 'mysql'; expected a SQLite"
        " file path (/var/lib/ajour/rollouts.db) or a PostgreSQL URL"
        " (postgresql://USER@HOST:5432/DATABASE)"
    )


def test_serve_refuses_an_unknown_scheme(tmp_path: Path) -> None:
    from delivery.cli import main

    s = Setup(tmp_path)
    (tmp_path / "none.yaml").write_text("{}\n")
    args = ["serve", "--config", str(tmp_path / "none.yaml"), "--fleet", str(s.tmp / "fleet"),
            "--http", "127.0.0.1:0", "--insecure-no-auth", "--registry", s.registry,
            "--rollout-db", "sqlite:///var/lib/ajour/rollouts.db"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "error: rollout database 'sqlite:///var/lib/ajour/rollouts.db': unknown scheme" in (
        result.output
    )


PROBE = """
import json, sys
from delivery.cli import main
from delivery.rollout_db import open_rollout_db
import delivery.rollout_store_pg
open_rollout_db(":memory:").close()
print("psycopg" in sys.modules)
open_rollout_db("postgresql://nobody@127.0.0.1:1/db").close()  # made, never connected
print("psycopg" in sys.modules)
tops = {n.split(".")[0] for n, m in list(sys.modules.items()) if getattr(m, "__spec__", None)}
print(json.dumps(sorted(t for t in tops if t not in sys.stdlib_module_names
                        and not t.startswith("_") and t not in ("ajour_build", "delivery"))))
"""


def test_a_worker_on_sqlite_never_imports_psycopg() -> None:
    """psycopg is loaded only for a PostgreSQL store, and then only the packages the
    ``delivery_lazy`` allow-list of pyproject.toml names come with it."""
    from tests.test_layers import ALLOWED

    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, check=True
    )
    before, after, loaded = result.stdout.splitlines()
    assert (before, after) == ("False", "True")
    allowed = ALLOWED["core"] + ALLOWED["delivery"] + ALLOWED["delivery_lazy"]
    assert [m for m in json.loads(loaded) if m not in allowed] == []


WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # as without the delivery-postgres extra: import fails
from delivery.rollout_db import open_rollout_db
open_rollout_db(":memory:").close()
try:
    open_rollout_db("postgresql://worker:Pg-s3cret@db.example.com/ajour")
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_without_psycopg_a_postgresql_url_says_which_extra() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PSYCOPG], capture_output=True, text=True, cwd=REPO,
        check=True,
    )  # fmt: skip
    assert result.stdout.strip() == (
        "DeliveryError rollout database postgresql://***@db.example.com/ajour: PostgreSQL needs"
        " psycopg: pip install 'ajour[delivery-postgres]'"
    )
