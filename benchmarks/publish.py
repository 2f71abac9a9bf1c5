"""Publish benchmark: pushing and pulling firmware through a real OCI registry.

Starts Debian's ``docker-registry`` on a free loopback port (``tests/registry.py``) and, for
artifacts of 64 KiB, 1 MiB and 16 MiB, times, median of N repetitions each:

* **Ajour push**   ``publisher_for("oci://<host>/bench/fw:latest", {}).publish(...)``: hash
  the file, check the version tag, upload config blob and firmware blob (oras-py), PUT the
  manifest under the version tag and again under the moving tag ``latest``;
* **Ajour pull**   ``RegistryReader(host).inspect(ref)`` + ``.firmware(ref, info)``: manifest,
  config blob and firmware blob, every blob checked against its digest;

and, as baselines measured in the same run and interleaved with them, the same bytes over
bare ``http.client``:

* **raw upload**   sha256 of the bytes (the protocol needs the digest), then a monolithic
  OCI distribution upload: ``POST /v2/<repo>/blobs/uploads/`` and ``PUT <location>&digest=``
  on one keep-alive connection (as oras-py's ``requests`` session does);
* **raw download** ``GET /v2/<repo>/blobs/<digest>`` on a new connection (as ``urllib``
  does for Ajour's reader), body read in full, not verified.

Every repetition pushes fresh random bytes under a new version, so every push is a real
upload and never a "blob exists" shortcut. Throughput is MB/s (10^6 bytes per second) of
firmware bytes, from the median time; the ratios are Ajour's throughput divided by the
baseline's (1.0 means no overhead). The same run also times ``hashlib.sha256`` over the
bytes, the verification cost that a pull pays and the raw download does not.

    python benchmarks/publish.py [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import oras  # noqa: E402

from ajour_build.core.artifact.reference import OciRef, parse_oci  # noqa: E402
from ajour_build.core.artifact.registry_reader import RegistryReader  # noqa: E402
from ajour_build.publish.destination import publisher_for  # noqa: E402
from ajour_build.publish.publisher import FirmwareArtifact  # noqa: E402
from tests.registry import run_registry  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
SIZES = (64 * KIB, MIB, 16 * MIB)
REPOSITORY = "bench/fw"
TAG = "latest"
TIMEOUT = 60.0
HASH_BYTES = 16 * MIB
OPS = ("ajour_push", "raw_upload", "ajour_pull", "raw_download", "sha256")
TIMES = "\N{MULTIPLICATION SIGN}"


def label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def timed(fn: Callable[[], object]) -> float:
    """Seconds for one call of ``fn``, after a full collection."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def hash_seconds(data: bytes) -> float:
    """Seconds for one sha256 of ``data``, averaged over at least 16 MiB of hashing: one
    64 KiB hash is too short to time alone."""
    rounds = max(1, HASH_BYTES // len(data))
    return timed(lambda: [hashlib.sha256(data).digest() for _ in range(rounds)]) / rounds


# --------------------------------------------------------------------------- baseline


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _status(resp: http.client.HTTPResponse, want: int, what: str) -> bytes:
    body = resp.read()
    if resp.status != want:
        raise SystemExit(f"{what}: HTTP {resp.status}, expected {want}: {body[:200]!r}")
    return body


def raw_upload(host: str, data: bytes) -> str:
    """Monolithic blob upload (POST, then PUT with the body) on one connection."""
    digest = sha256_digest(data)
    conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
    try:
        conn.request("POST", f"/v2/{REPOSITORY}/blobs/uploads/", headers={"Content-Length": "0"})
        resp = conn.getresponse()
        location = resp.getheader("Location", "")
        _status(resp, 202, "raw upload POST")
        parts = urlsplit(location)
        query = f"{parts.query}&digest={digest}" if parts.query else f"digest={digest}"
        target = f"{parts.path}?{query}"
        conn.request(
            "PUT",
            target,
            body=data,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(data)),
            },
        )
        resp = conn.getresponse()
        _status(resp, 201, "raw upload PUT")
    finally:
        conn.close()
    return digest


def raw_download(host: str, digest: str) -> bytes:
    """One blob GET on a new connection; the body is read in full and not verified."""
    conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
    try:
        conn.request("GET", f"/v2/{REPOSITORY}/blobs/{digest}")
        return _status(conn.getresponse(), 200, "raw download GET")
    finally:
        conn.close()


# --------------------------------------------------------------------------- measuring


@dataclass
class Case:
    """One artifact size: its timings per operation, one entry per repetition."""

    size: int
    seconds: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPS})

    def median(self, op: str) -> float:
        return statistics.median(self.seconds[op])

    def mbps(self, op: str) -> float:
        return self.size / self.median(op) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "label": label(self.size),
            "median_ms": {op: self.median(op) * 1e3 for op in OPS},
            "mb_per_s": {op: self.mbps(op) for op in OPS},
            "push_ratio": self.mbps("ajour_push") / self.mbps("raw_upload"),
            "pull_ratio": self.mbps("ajour_pull") / self.mbps("raw_download"),
            "seconds": self.seconds,
        }


class Bench:
    def __init__(self, host: str, workdir: Path) -> None:
        self.host = host
        self.workdir = workdir
        self.url = f"oci://{host}/{REPOSITORY}:{TAG}"
        self.ref: OciRef = parse_oci(self.url)
        self.counter = 0

    def _fresh(self, size: int) -> tuple[Path, str, bytes]:
        """New random content under a new version: a real upload, never a shortcut."""
        self.counter += 1
        data = os.urandom(size)
        path = self.workdir / f"fw-{self.counter}.bin"
        path.write_bytes(data)
        return path, f"1.0.{self.counter}", data

    def ajour_push(self, path: Path, version: str) -> None:
        publisher_for(self.url, {}).publish(FirmwareArtifact(path, version))

    def ajour_pull(self) -> tuple[str, bytes]:
        reader = RegistryReader(self.host)
        info = reader.inspect(self.ref)
        return info.version, reader.firmware(self.ref, info)

    def repeat(self, case: Case, turn: int) -> None:
        """One repetition of every operation for one size; the order alternates per turn,
        so neither Ajour nor the baseline always runs first on a warm connection cache."""
        path, version, data = self._fresh(case.size)
        raw_data = os.urandom(case.size)  # the baseline's own fresh blob
        pulled: list[tuple[str, bytes]] = []

        def push() -> None:
            case.seconds["ajour_push"].append(timed(lambda: self.ajour_push(path, version)))

        def upload() -> None:
            case.seconds["raw_upload"].append(timed(lambda: raw_upload(self.host, raw_data)))

        def pull() -> None:
            case.seconds["ajour_pull"].append(timed(lambda: pulled.append(self.ajour_pull())))

        def download() -> None:
            # the very blob Ajour just pushed and pulled: the same bytes, the same file
            got: list[bytes] = []
            digest = sha256_digest(data)
            case.seconds["raw_download"].append(
                timed(lambda: got.append(raw_download(self.host, digest)))
            )
            if got[0] != data:
                raise SystemExit("raw download returned other bytes than were pushed")

        pushes = (push, upload) if turn % 2 == 0 else (upload, push)
        pulls = (pull, download) if turn % 2 == 0 else (download, pull)
        for step in (*pushes, *pulls):
            step()
        case.seconds["sha256"].append(hash_seconds(data))
        if pulled[0] != (version, data):
            raise SystemExit(f"Ajour pulled {pulled[0][0]}, not the {version} just pushed")
        path.unlink()


def measure(host: str, workdir: Path, repeats: int) -> list[Case]:
    bench = Bench(host, workdir)
    # warm-up, not measured: first connections, lazy imports, the registry's own start-up
    warm = Case(SIZES[0])
    bench.repeat(warm, 0)
    bench.repeat(warm, 1)
    cases = [Case(size) for size in SIZES]
    for turn in range(repeats):  # interleaved across sizes, like benchmarks/render.py
        for case in cases:
            bench.repeat(case, turn)
    return cases


# --------------------------------------------------------------------------- reporting


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "oras": getattr(oras, "__version__", "?"),
    }


def run(repeats: int) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ajour-bench-publish-") as tmp:
        with run_registry(Path(tmp) / "registry") as registry:
            work = Path(tmp) / "work"
            work.mkdir()
            cases = measure(registry.host, work, repeats)
    return {
        "benchmark": "publish",
        "machine": machine(),
        "repeats": repeats,
        "unit": "MB/s = 10^6 firmware bytes per second, from the median time",
        "results": [case.as_dict() for case in cases],
        "wall_seconds": time.perf_counter() - started,
    }


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"machine: {m['nproc']} CPUs, {m['implementation']} {m['python']}, oras-py {m['oras']};"
        f" median of {report['repeats']}, MB/s = 10^6 bytes/s"
    )
    head = (
        f"{'size':>8}{'ajour push':>12}{'raw upload':>12}{'push ratio':>12}"
        f"{'ajour pull':>12}{'raw dl':>10}{'pull ratio':>12}{'sha256':>10}"
    )
    print(f"\nthroughput (MB/s)\n{head}")
    for r in report["results"]:
        s = r["mb_per_s"]
        print(
            f"{r['label']:>8}{s['ajour_push']:>12.1f}{s['raw_upload']:>12.1f}"
            f"{r['push_ratio']:>11.2f}{TIMES}{s['ajour_pull']:>12.1f}{s['raw_download']:>10.1f}"
            f"{r['pull_ratio']:>11.2f}{TIMES}{s['sha256']:>10.0f}"
        )
    print(f"\nmedian time (ms)\n{'size':>8}" + "".join(f"{op:>14}" for op in OPS))
    for r in report["results"]:
        ms = r["median_ms"]
        print(f"{r['label']:>8}" + "".join(f"{ms[op]:>14.2f}" for op in OPS))
    print(
        "\nratios are Ajour's throughput / the raw baseline's (1.00 = no overhead);"
        f" whole run {report['wall_seconds']:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5, help="repetitions per size")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    report = run(args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
