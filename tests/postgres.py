"""A real PostgreSQL server on loopback for tests (Debian's postgresql, a private cluster)."""

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

from tests.registry import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user."""
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


@contextmanager
def run_postgres() -> Iterator[str]:
    """Start a throwaway cluster; yield its SQLAlchemy URL (trust auth, loopback only)."""
    root = Path(tempfile.mkdtemp(prefix="ajour-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", free_port()
    try:
        subprocess.run(
            _as_postgres([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "ajour"]),
            check=True,
            capture_output=True,
        )
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
        subprocess.run(
            _as_postgres(
                [_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "start"]
            ),
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            )
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{(root / 'log').read_text()}")
            time.sleep(0.1)
        yield f"postgresql+psycopg://ajour@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
