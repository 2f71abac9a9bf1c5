"""Files written all-or-nothing, and streamed SHA-256 digests: the one copy of each helper.

A reader never sees a half-written file: data goes to a new temporary file in the same
directory, is flushed to disk, and is renamed over the target in one ``os.replace``. A
failed write leaves the old file as it was and removes the temporary one. New files get
the mode the umask allows (as ``open()`` would), unless ``mode`` says otherwise, and the
owner ``owner`` (uid, gid; -1 keeps one) before they are renamed into place.

Temporary files are named ``.tmp-<12 hex>-<name>``. A writer killed mid-write leaves one
behind; :func:`sweep_temporaries` removes them, and is safe only where every writer of the
directory holds one :func:`exclusive_lock` while it writes (its holder then knows that any
temporary file left is a dead writer's).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".tmp-"
_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{12}-(.+)")


@contextmanager
def atomic_writer(
    path: Path, mode: int | None = None, owner: tuple[int, int] | None = None
) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` when the block ends normally."""
    tmp = path.with_name(f"{TMP_PREFIX}{secrets.token_hex(6)}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            if owner is not None:
                os.fchown(fh.fileno(), *owner)  # before the mode: chown may clear set-id bits
            if mode is not None:
                os.fchmod(fh.fileno(), mode)  # exactly ``mode``, whatever the umask
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    path: Path, data: bytes | str, mode: int | None = None, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) in one rename."""
    with atomic_writer(path, mode, owner) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def atomic_copy(source: Path, path: Path, mode: int | None = None) -> str:
    """Replace ``path`` with a copy of ``source``; return the hex SHA-256 of what was copied."""
    digest = hashlib.sha256()
    with atomic_writer(path, mode) as out, source.open("rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in blocks (a firmware image never sits in memory)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextmanager
def exclusive_lock(path: Path, wait: float, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Every call opens its own file description, so the lock excludes other threads of this
    process as well as other processes; the kernel releases it when its holder dies, so a
    killed holder never leaves a stale lock. Waits at most ``wait`` seconds, then raises
    ``TimeoutError`` naming ``what`` and the holder's process id (written into the file).
    """
    give_up = time.monotonic() + wait
    pause = 0.001
    with path.open("a+", encoding="utf-8") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    fh.seek(0)
                    holder = fh.read(32).strip() or "unknown"
                    raise TimeoutError(
                        f"{what} is locked by another writer (process {holder}, lock file"
                        f" {path}) for more than {wait:g} s; if that process is hung, stop it"
                        " and try again (a process that died has already released the lock)"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sweep_temporaries(directory: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporary files :func:`atomic_writer` left in ``directory`` (only those
    for ``names``, if given); return what was removed. Call it only while holding the
    :func:`exclusive_lock` that every writer of ``directory`` holds while writing."""
    wanted = None if names is None else set(names)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or (wanted is not None and match.group(1) not in wanted):
            continue
        if entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed
