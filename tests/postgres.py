"""A real PostgreSQL server on loopback for tests (Debian's postgresql, a private cluster).

``Postgres`` is one throwaway cluster (initdb in a temporary directory, trust auth for the
``ajour`` superuser, 127.0.0.1 on a free port, its Unix socket in that directory) that a test
may stop and start again. ``run_postgres`` yields the build service's SQLAlchemy URL of one;
the ``postgres_server`` fixture is one cluster for the whole session (skipped only when the
binaries are missing: ``scripts/setup`` installs them), and ``rollout_db`` runs a test once
on a SQLite file and once on a fresh PostgreSQL database, logged into with a password.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.registry import free_port

if TYPE_CHECKING:
    from delivery.rollout_store import RolloutStore


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return found[-1]


def installed() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user."""
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


class Postgres:
    """One private cluster; ``dsn`` names a database on it (libpq URL)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ajour-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data, self.port = self.root / "data", free_port()
        self._databases = 0
        subprocess.run(
            _as_postgres([_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "ajour"]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.root}"
        )
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-o", options,
                          "-l", str(self.root / "log"), "start"]),
            check=True, capture_output=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{(self.root / 'log').read_text()}")
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` ends every session (clients see their connection go)."""
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "stop"]),
            capture_output=True,
        )

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", user: str = "ajour", password: str = "") -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def execute(self, *statements: str, database: str = "postgres") -> None:
        """Statements as the superuser, outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(self.dsn(database), autocommit=True) as db:
            for statement in statements:
                db.execute(statement.encode())

    def database(self, owner: str = "ajour") -> str:
        """A new, empty database's name."""
        self._databases += 1
        name = f"t{self._databases}"
        self.execute(f"CREATE DATABASE {name} OWNER {owner}")
        return name

    def password_role(self, name: str, password: str) -> None:
        """A login role that must give its password (scram-sha-256 over TCP)."""
        self.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self.execute("SELECT pg_reload_conf()")


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def run_postgres() -> Iterator[str]:
    """Start a throwaway cluster; yield its SQLAlchemy URL (trust auth, loopback only)."""
    with running_postgres() as server:
        yield f"postgresql+psycopg://ajour@127.0.0.1:{server.port}/postgres"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    if not installed():
        pytest.skip(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb):"
            " scripts/setup installs it (apt-get install postgresql)"
        )
    with running_postgres() as server:
        server.password_role(WORKER, WORKER_PASSWORD)
        yield server


# the role the rollout tests' workers log in as, with a password (scram-sha-256 over TCP)
WORKER, WORKER_PASSWORD = "worker", "Pg-s3cret-8461"


class RolloutDb:
    """Where a test's rollouts live (a SQLite file or a PostgreSQL DSN with a password);
    the stores it opened are closed when the test ends."""

    def __init__(self, location: str, secret: str = "") -> None:
        self.location = location
        self.secret = secret  # the password in ``location`` ("" for SQLite)
        self.opened: list[RolloutStore] = []

    def open(self) -> RolloutStore:
        from delivery.rollout_db import open_rollout_db

        store = open_rollout_db(self.location)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgres"])
def rollout_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RolloutDb]:
    """The test once on a SQLite file, once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        found = RolloutDb(str(tmp_path / "rollouts.db"))
    else:
        server: Postgres = request.getfixturevalue("postgres_server")
        database = server.database(owner=WORKER)
        found = RolloutDb(server.dsn(database, WORKER, WORKER_PASSWORD), WORKER_PASSWORD)
    yield found
    for store in found.opened:
        store.close()
