"""A registry that stalls, goes away or fails: the publish ends within its bounds, with a
message naming the registry and what to do, and only idempotent requests are retried.

The registries here are real loopback servers: the real docker-registry behind a TCP proxy
that stalls or closes after the first connection, a server that accepts and never answers,
a closed port, and a small HTTP stub that answers errors and counts requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ajour_build.core.artifact.reference import parse_oci
from ajour_build.core.errors import PublishError
from ajour_build.publish.destination import publisher_for
from ajour_build.publish.oci import OciPublisher
from ajour_build.publish.publisher import FirmwareArtifact
from tests.loopback_http import running
from tests.registry import Registry, free_port, run_registry
from tests.tcp_faults import faulty_server


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def artifact(tmp_path: Path) -> FirmwareArtifact:
    path = tmp_path / "fw.bin"
    path.write_bytes(b"\x42" * 4096)
    return FirmwareArtifact(path, "1.0")


def failure_within(limit: float, call: Callable[[], object]) -> tuple[str, float]:
    """Run ``call`` in a thread; it must raise PublishError within ``limit`` seconds."""
    outcome: list[BaseException | object] = []
    thread = threading.Thread(target=lambda: outcome.append(_run(call)), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"the publish still hangs after {limit} s"
    error = outcome[0]
    assert isinstance(error, PublishError), f"expected a PublishError, got {error!r}"
    return str(error), elapsed


def _run(call: Callable[[], object]) -> BaseException | object:
    try:
        return call()
    except BaseException as exc:
        return exc


def bounded(host: str, **bounds: float) -> OciPublisher:
    return OciPublisher(parse_oci(f"oci://{host}/fw/app:latest"), **bounds)  # type: ignore[arg-type]


def test_a_registry_that_is_down_fails_at_once(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    message, elapsed = failure_within(
        5, lambda: publisher_for(f"oci://{host}/fw/app:latest", {}).publish(artifact(tmp_path))
    )
    assert elapsed < 4, elapsed  # not the 5 s connect timeout, nor retried
    assert f"registry {host} is unreachable" in message and "is it running" in message


def test_a_registry_that_goes_away_mid_publish_fails_at_once(
    registry: Registry, tmp_path: Path
) -> None:
    target = int(registry.host.rsplit(":", 1)[1])
    with faulty_server(target, forward=1, then="refuse") as port:
        host = f"127.0.0.1:{port}"
        message, elapsed = failure_within(
            15, lambda: publisher_for(f"oci://{host}/fw/app:latest", {}).publish(artifact(tmp_path))
        )
    assert elapsed < 1, elapsed  # a refused connection is not retried
    assert f"registry {host} is unreachable (Connection refused)" in message, message


def test_a_registry_that_never_answers_fails_within_the_read_timeout(tmp_path: Path) -> None:
    with faulty_server() as port:
        host = f"127.0.0.1:{port}"
        message, elapsed = failure_within(
            10, lambda: bounded(host, read_timeout=1.0).publish(artifact(tmp_path))
        )
    assert 0.9 < elapsed < 3, elapsed
    assert f"registry {host} did not answer HEAD" in message and "within 1 s" in message
    assert "stalled or overloaded" in message, message


def test_a_registry_that_stalls_mid_publish_fails_within_the_read_timeout(
    registry: Registry, tmp_path: Path
) -> None:
    target = int(registry.host.rsplit(":", 1)[1])
    with faulty_server(target, forward=1, then="stall") as port:
        host = f"127.0.0.1:{port}"
        message, elapsed = failure_within(
            15, lambda: bounded(host, read_timeout=1.0).publish(artifact(tmp_path))
        )
    # the stalled blob HEAD times out once: a read timeout is not retried
    assert 0.9 < elapsed < 3, elapsed
    assert f"registry {host} did not answer in time (no answer within the read timeout" in message
    assert "1 s of silence" in message and "publish again" in message, message


@contextmanager
def failing_registry(
    pause: float = 0.0, blob_head: int = 503, upload: int = 500, manifest_head: int = 404
) -> Iterator[tuple[str, list[str]]]:
    """An HTTP stub (not a registry): a manifest HEAD answers ``manifest_head`` (404: absent),
    a blob HEAD ``blob_head``, starting an upload ``upload``; each after ``pause`` seconds.
    Yields its host and the requests it got ("METHOD path")."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int) -> None:
            seen.append(f"{self.command} {self.path}")
            time.sleep(pause)
            body = json.dumps({"errors": [{"code": "UNKNOWN", "message": "disk full"}]})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body.encode())

        def do_HEAD(self) -> None:
            self._answer(blob_head if "/blobs/" in self.path else manifest_head)

        def do_GET(self) -> None:
            self._answer(404)

        def do_POST(self) -> None:
            self._answer(upload)

        def do_PUT(self) -> None:
            self._answer(upload)

        def log_message(self, *args: object) -> None:
            pass

    with running(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as port:
        yield f"127.0.0.1:{port}", seen


def test_only_idempotent_requests_are_retried(tmp_path: Path) -> None:
    with failing_registry() as (host, seen):
        message, elapsed = failure_within(
            15, lambda: publisher_for(f"oci://{host}/fw/app:latest", {}).publish(artifact(tmp_path))
        )
    heads = [r for r in seen if r.startswith("HEAD") and "/blobs/" in r]
    posts = [r for r in seen if r.startswith("POST")]
    assert len(heads) == 3, f"a blob HEAD answered 503 is tried three times: {seen}"
    assert len(posts) == 1, f"starting an upload (POST) is never retried: {seen}"
    assert elapsed < 3, elapsed
    assert f"registry {host}:" in message and "disk full" in message, message


def test_a_version_check_answered_with_a_server_error_is_tried_three_times(
    tmp_path: Path,
) -> None:
    with failing_registry(manifest_head=500) as (host, seen):
        message, elapsed = failure_within(
            15, lambda: publisher_for(f"oci://{host}/fw/app:latest", {}).publish(artifact(tmp_path))
        )
    assert seen == ["HEAD /v2/fw/app/manifests/1.0"] * 3, seen
    assert 0.7 < elapsed < 4, elapsed  # the pauses between tries (their count: seen)
    assert f"registry {host}: manifest fw/app:1.0 failed with HTTP 500" in message, message


def test_the_deadline_bounds_the_whole_publish(tmp_path: Path) -> None:
    # every answer takes 0.6 s, well inside the read timeout; the deadline ends it
    with failing_registry(pause=0.6, blob_head=404) as (host, seen):
        message, elapsed = failure_within(
            15, lambda: bounded(host, read_timeout=5.0, deadline=1.5).publish(artifact(tmp_path))
        )
    assert 1.4 < elapsed < 2.5, elapsed
    assert f"registry {host} did not answer in time" in message, message
    assert "1.5 s for the whole publish" in message, message
    assert len(seen) <= 3, seen
