"""The one atomic-write helper (ajour_build.core.files): all or nothing, modes as asked."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.files import atomic_copy, atomic_write, atomic_writer, sha256_file
from ajour_build.core.hosts import is_loopback


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_follow_the_umask_unless_a_mode_is_given(tmp_path: Path, umask_022: None) -> None:
    atomic_write(tmp_path / "a", b"x")
    assert mode_of(tmp_path / "a") == 0o644  # readable by a worker under another account
    atomic_write(tmp_path / "secret", "pw", mode=0o600)
    assert mode_of(tmp_path / "secret") == 0o600
    atomic_write(tmp_path / "shared", "pw", mode=0o640)
    assert mode_of(tmp_path / "shared") == 0o640


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError), atomic_writer(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]


def test_copy_reports_the_digest_of_what_it_copied(tmp_path: Path) -> None:
    source = tmp_path / "fw.bin"
    source.write_bytes(os.urandom(3 << 20))  # more than one read block
    digest = atomic_copy(source, tmp_path / "copy.bin")
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest() == sha256_file(source)
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST:5000", True),
        ("127.0.0.1", True),
        ("127.1.2.3:80", True),
        ("::1", True),  # a bare IPv6 address (as urlsplit's hostname gives it)
        ("[::1]", True),
        ("[::1]:5000", True),
        ("registry.example.com", False),
        ("registry.example.com:5000", False),
        ("10.0.0.1", False),
        ("[2001:db8::1]:443", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_layout_blobs_and_index_are_readable_by_another_account(
    tmp_path: Path, umask_022: None
) -> None:
    store = LayoutStore(tmp_path / "layout")
    store.init()
    digest = store.put_bytes(b"firmware")
    blob = tmp_path / "layout" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    assert mode_of(blob) == 0o644
    assert mode_of(tmp_path / "layout" / "index.json") == 0o644
