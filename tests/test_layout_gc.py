"""Garbage collection of OCI layouts: real layouts, real publishers in threads beside it."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ajour_build.cli import main
from ajour_build.core.artifact.layout_gc import collect, reachable
from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.layout_writer import layout_writer
from ajour_build.core.artifact.reference import LayoutRef
from ajour_build.core.errors import ArtifactError
from ajour_build.publish.layout import LayoutPublisher
from ajour_build.publish.publisher import FirmwareArtifact


def firmware(tmp: Path, name: str) -> tuple[Path, bytes]:
    data = bytes(range(256)) * 8 + f"firmware {name}".encode()
    path = tmp / f"{name}.bin"
    path.write_bytes(data)
    return path, data


def publish(layout: Path, tmp: Path, version: str, tag: str = "latest") -> bytes:
    path, data = firmware(tmp, version)
    LayoutPublisher(LayoutRef(layout, tag), patch_count=1).publish(FirmwareArtifact(path, version))
    return data


def orphan(layout: Path, data: bytes, age: float = 7200.0) -> str:
    """A blob no tag reaches (a publish that failed after writing it), ``age`` s old."""
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.write_bytes(data)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return "sha256:" + digest


def reads_back(layout: Path, versions: dict[str, bytes]) -> None:
    store = LayoutStore(layout)
    for version, data in versions.items():
        assert store.firmware(store.inspect(version)) == data, version


def test_unreachable_old_blobs_go_and_everything_tagged_stays(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    versions = {v: publish(layout, tmp_path, v) for v in ("1.0.0", "1.1.0")}
    old = orphan(layout, b"left by a failed publish")
    young = orphan(layout, b"written a moment ago", age=5)
    before = len(list((layout / "blobs" / "sha256").iterdir()))
    dry = collect(layout, dry_run=True)
    assert dry.removed == (old,) and dry.young == 1
    assert len(list((layout / "blobs" / "sha256").iterdir())) == before
    done = collect(layout)
    assert done.removed == (old,) and done.freed == len(b"left by a failed publish")
    store = LayoutStore(layout)
    assert not store.blob_path(old).exists() and store.blob_path(young).exists()
    reads_back(layout, versions)
    # the patch layer from 1.0.0 to 1.1.0 is reachable through 1.1.0's manifest
    patches = store.inspect("1.1.0").patches
    assert patches and all(store.blob_path(p.digest).exists() for p in patches)
    assert collect(layout, min_age=0).removed == (young,)


def test_a_publish_holding_the_lock_is_never_collected_under(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    versions = {"1.0.0": publish(layout, tmp_path, "1.0.0")}
    written, release = threading.Event(), threading.Event()
    digest: list[str] = []

    def slow_publish() -> None:  # writes a blob, then waits before it tags it
        with layout_writer(layout) as writer:
            digest.append(writer.put_bytes(b"a blob not tagged yet"))
            written.set()
            release.wait(30)
            writer.tag("pending", digest[0], len(b"a blob not tagged yet"))

    publisher = threading.Thread(target=slow_publish)
    publisher.start()
    assert written.wait(30)
    result: list[object] = []
    collector = threading.Thread(target=lambda: result.append(collect(layout, min_age=0)))
    collector.start()
    time.sleep(0.5)
    assert collector.is_alive() and result == [], "the collector must wait for the publish"
    release.set()
    publisher.join(30)
    collector.join(30)
    assert LayoutStore(layout).read_blob(digest[0]) == b"a blob not tagged yet"
    assert LayoutStore(layout).resolve("pending") == digest[0]
    reads_back(layout, versions)


def test_publishers_in_threads_while_gc_runs_lose_nothing(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    publish(layout, tmp_path, "0.1.0")
    versions: dict[str, bytes] = {}
    lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []

    def publisher(n: int) -> None:
        try:
            for i in range(4):
                version = f"{n}.{i}.0"
                data = publish(layout, tmp_path, version, tag=f"stream-{n}")
                with lock:
                    versions[version] = data
        except BaseException as exc:  # reported below
            errors.append(exc)

    removed: list[str] = []

    def collector() -> None:
        while not done.is_set():
            orphan(layout, os.urandom(64))  # garbage appears all the time
            removed.extend(collect(layout, min_age=0).removed)

    threads = [threading.Thread(target=publisher, args=(n,)) for n in (1, 2, 3)]
    gc = threading.Thread(target=collector)
    gc.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    gc.join(60)
    assert errors == []
    assert len(versions) == 12 and len(removed) > 0
    reads_back(layout, versions)
    kept = reachable(LayoutStore(layout))
    assert not kept & set(removed)


def test_a_damaged_index_stops_the_collection(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    publish(layout, tmp_path, "1.0.0")
    old = orphan(layout, b"garbage")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append({"mediaType": "x", "size": 1})
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="a descriptor has no sha256 digest"):
        collect(layout, min_age=0)
    assert LayoutStore(layout).blob_path(old).exists()
    with pytest.raises(ArtifactError, match="is not an OCI layout"):
        collect(tmp_path / "elsewhere")


def test_gc_command(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    data = publish(layout, tmp_path, "1.0.0")
    old = orphan(layout, b"garbage")
    url = f"oci-layout://{layout}"
    dry = CliRunner().invoke(main, ["gc", url, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["removed"] == [old]
    assert LayoutStore(layout).blob_path(old).exists()
    real = CliRunner().invoke(main, ["gc", url, "--min-age", "0s"])
    assert real.exit_code == 0, real.output
    assert "removed 1 blob(s), 7 bytes" in real.output
    assert not LayoutStore(layout).blob_path(old).exists()
    reads_back(layout, {"1.0.0": data})
    bad = CliRunner().invoke(main, ["gc", url, "--min-age", "soon", "--json"])
    assert bad.exit_code == 1 and "--min-age: 'soon' is not a duration" in bad.output
