"""Delivery's firmware sources against real storage: registry, layout dir, file dir."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.reference import OciRef, parse_oci
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.publish.destination import publisher_for
from ajour_build.publish.publisher import FirmwareArtifact
from delivery.cache import ByteLru, TtlCache
from delivery.sources.file import FileSource
from delivery.sources.firmware_source import SourceUnavailable
from delivery.sources.layout import RECHECK_S, LayoutSource
from delivery.sources.oci import OciSource
from tests.clock import Clock
from tests.registry import free_port, run_registry


def publish(tmp: Path, url: str, version: str, content: bytes) -> None:
    path = tmp / f"fw-{version}.bin"
    path.write_bytes(content)
    publisher_for(url, {}).publish(FirmwareArtifact(path, version))


def test_registry_source_follows_the_moving_tag(tmp_path: Path) -> None:
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/fw/app:latest"
        publish(tmp_path, url, "1.0", b"A" * 3000)
        clock = Clock()
        source = OciSource(RegistryReader(registry.host), parse_oci(url), TtlCache(30, clock))
        first = source.target()
        assert (first.version, first.size) == (b"1.0", 3000)
        assert first.checksum == hashlib.sha256(b"A" * 3000).digest()
        publish(tmp_path, url, "1.1", b"B" * 2000)
        assert source.target().version == b"1.0", "tag resolution is cached within the TTL"
        source.invalidate()  # what a publish event or a registry notification does
        assert source.target().version == b"1.1"
        publish(tmp_path, url, "1.2", b"C" * 1000)
        clock.now += 31  # no event: the TTL bounds how stale the target can be
        assert source.target().version == b"1.2"


class EventDuringLookup(RegistryReader):
    """The real reader; after its next tag lookup has its answer, and before the source
    caches it, a new version is published and its publish event arrives (``hook``)."""

    hook: Callable[[], None] | None = None

    def resolve(self, ref: OciRef) -> str | None:
        digest = super().resolve(ref)
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return digest


def test_a_publish_event_during_a_tag_lookup_is_not_lost(tmp_path: Path) -> None:
    """The event arrives while a status's tag lookup is under way: the older answer must
    not be cached, or devices get the old version for a whole TTL after the publish."""
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/fw/race:latest"
        publish(tmp_path, url, "1.0", b"A" * 3000)
        reader = EventDuringLookup(registry.host)
        source = OciSource(reader, parse_oci(url), TtlCache(30, Clock()))

        def publish_and_notify() -> None:
            publish(tmp_path, url, "1.1", b"B" * 2000)
            source.invalidate()  # the registry's notification for the new tag

        reader.hook = publish_and_notify
        assert source.target().version == b"1.0"  # answered before the publish: fine once
        assert source.target().version == b"1.1", "the lookup's older answer was cached"


def test_registry_source_refuses_corruption_and_survives_outages(tmp_path: Path) -> None:
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/fw/c:latest"
        content = b"\x11" * 1024
        publish(tmp_path, url, "9", content)
        blob = registry.blob_file(content)
        blob.write_bytes(b"\x12" + content[1:])
        source = OciSource(RegistryReader(registry.host), parse_oci(url))
        with pytest.raises(SourceUnavailable, match="corrupted"):
            source.target()
    down = OciSource(
        RegistryReader(f"127.0.0.1:{free_port()}"),
        parse_oci(f"oci://127.0.0.1:{free_port()}/fw/x:latest"),
    )
    with pytest.raises(SourceUnavailable, match="unreachable"):
        down.target()


def test_layout_source(tmp_path: Path) -> None:
    url = f"oci-layout://{tmp_path / 'layout'}:stable"
    publish(tmp_path, url, "2.0", b"L" * 700)
    source = LayoutSource(LayoutStore(tmp_path / "layout"), "stable")
    always = LayoutSource(LayoutStore(tmp_path / "layout"), "stable", recheck=0.0)
    assert source.target().version == b"2.0" and always.target().version == b"2.0"
    publish(tmp_path, url, "2.1", b"M" * 700)
    assert always.target().version == b"2.1", "recheck=0 looks at index.json every time"
    time.sleep(RECHECK_S)
    assert source.target().version == b"2.1", "a publish is seen once recheck has passed"
    publish(tmp_path, url, "2.2", b"N" * 700)
    source.invalidate()
    assert source.target().version == b"2.2", "an invalidation (publish event) is seen at once"
    with pytest.raises(SourceUnavailable, match="tag 'nope' not found"):
        LayoutSource(LayoutStore(tmp_path / "layout"), "nope").target()


def test_file_source_reads_drogue_layout_and_refuses_mismatch(tmp_path: Path) -> None:
    publish(tmp_path, f"dir://{tmp_path / 'files' / 'sensor'}", "0.3", b"S" * 99)
    source = FileSource(tmp_path / "files", "sensor")
    target = source.target()
    assert (target.version, target.data) == (b"0.3", b"S" * 99)
    (tmp_path / "files" / "sensor.bin").write_bytes(b"T" * 99)
    source.invalidate()
    with pytest.raises(SourceUnavailable, match="does not match"):
        source.target()
    with pytest.raises(SourceUnavailable, match="does not exist"):
        FileSource(tmp_path / "files", "missing").target()


@given(
    st.lists(st.tuples(st.integers(0, 20), st.binary(max_size=40)), max_size=60),
    st.integers(1, 200),
)
def test_byte_lru_never_exceeds_its_capacity(ops: list[tuple[int, bytes]], capacity: int) -> None:
    lru: ByteLru[int] = ByteLru(capacity)
    for key, value in ops:
        lru.put(key, value)
        assert lru.size <= capacity
        got = lru.get(key)
        assert got is None or got == value


def test_layout_source_never_answers_stale_to_concurrent_handlers(tmp_path: Path) -> None:
    """Handler threads that look together after a publish all see it: no thread may take
    another's fresh look at ``index.json`` for its own while the old target is cached."""
    url = f"oci-layout://{tmp_path / 'layout'}:stable"
    publish(tmp_path, url, "1.0", b"A" * 5000)
    source = LayoutSource(LayoutStore(tmp_path / "layout"), "stable", recheck=0.2)
    previous = b"1.0"
    for round_, version in enumerate(("1.1", "1.2", "1.3")):
        assert source.target().version == previous
        time.sleep(0.25)  # the last look is older than recheck
        publish(tmp_path, url, version, bytes([66 + round_]) * (5000 + 1000 * round_))
        seen: list[bytes] = []
        threads = [
            threading.Thread(target=_look, args=(source, barrier, seen))
            for barrier in [threading.Barrier(16)]
            for _ in range(16)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(seen) == {version.encode()}, seen
        previous = version.encode()


def _look(source: LayoutSource, barrier: threading.Barrier, seen: list[bytes]) -> None:
    barrier.wait()
    seen.append(source.target().version)
