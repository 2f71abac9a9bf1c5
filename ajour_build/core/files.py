"""Files written all-or-nothing, and streamed SHA-256 digests: the one copy of each helper.

A reader never sees a half-written file: data goes to a new temporary file in the same
directory, is flushed to disk, and is renamed over the target in one ``os.replace``. A
failed write leaves the old file as it was and removes the temporary one. New files get
the mode the umask allows (as ``open()`` would), unless ``mode`` says otherwise, and the
owner ``owner`` (uid, gid; -1 keeps one) before they are renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_writer(
    path: Path, mode: int | None = None, owner: tuple[int, int] | None = None
) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` when the block ends normally."""
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}-{path.name}")
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
