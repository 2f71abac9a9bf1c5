"""Fleet-scale benchmark: how long, and how much memory, until one delivery worker answers.

Generates fleets of 10k, 100k and 1M devices (``--no-million`` leaves the last one out) in
a temporary directory: one file with the Applications (one per 10,000 devices, each with
``spec.firmware.container.image``), then the Devices in files of ``--per-file`` devices.
Every Device has ``metadata: {name, application}`` and one password credential
(``spec.credentials.credentials: [{pass: ...}]``, unique per device); every 100th has its
own firmware spec, the same channel override for all of its application's overriders.

Each load runs in a fresh interpreter (``python -m benchmarks.fleet_scale --child``):

* **worker**: ``load_fleet`` + ``delivery.targets.Targets(...)`` + ``delivery.worker.Worker``,
  then one status handled (the worker answers), as ``ajour-delivery serve`` starts;
* **floor (baseline)**: ``yaml.load_all`` with libyaml's ``CSafeLoader`` over the same
  files, every document kept: reading the bytes, no validation, nothing else imported.

Wall time is measured by this process, from starting the child until it exits: it prints
its report as soon as it is ready and leaves with ``os._exit`` (freeing a million objects
is not part of "ready"), so the time includes the interpreter's start and the imports.
Peak RSS is the child's ``resource.getrusage(RUSAGE_SELF).ru_maxrss``; the worker also
reports its phases (import, load, worker). Best of ``--repeats`` (one run at 1M), floor
and worker alternating. Children run under an address-space limit (``--max-mb``) and a
timeout, so an old loader cannot take the machine down; a child over them is reported.
Results and their history: docs/performance.md, "Fleet scale benchmark".

The exit status is 1 when the 100k goal is missed: worker ready in 3 s or more, or a peak
RSS over 200 MB.

    python benchmarks/fleet_scale.py [--no-million] [--repeats 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEVICES_PER_APP = 10_000
OVERRIDE_EVERY = 100
GOAL_DEVICES = 100_000
GOAL_SECONDS = 3.0
GOAL_MB = 200.0
MODES = ("floor", "worker")
TIMES = "\N{MULTIPLICATION SIGN}"

APPLICATION = """\
---
kind: Application
metadata:
  name: {app}
spec:
  firmware:
    container:
      image: {app}:latest
"""
DEVICE = """\
---
kind: Device
metadata:
  name: dev-{i:07d}
  application: {app}
spec:
  credentials:
    credentials:
      - pass: "{password}"
"""
OVERRIDE = """\
  firmware:
    container:
      image: {app}:canary
"""


def app_name(i: int) -> str:
    return f"app-{i // DEVICES_PER_APP:04d}"


def password(i: int) -> str:
    """A distinct, deterministic password per device (not a secret: a benchmark fixture)."""
    return f"pw-{(i * 2654435761) % 2**32:08x}-{i:x}"


def write_fleet(root: Path, devices: int, per_file: int) -> int:
    """The fleet's files under ``root``; returns their total size in bytes."""
    root.mkdir(parents=True, exist_ok=True)
    apps = sorted({app_name(i) for i in range(0, devices, DEVICES_PER_APP)})
    total = 0
    text = "".join(APPLICATION.format(app=a) for a in apps)
    (root / "applications.yaml").write_text(text, encoding="utf-8")
    total += len(text)
    for start in range(0, devices, per_file):
        parts = []
        for i in range(start, min(devices, start + per_file)):
            app = app_name(i)
            parts.append(DEVICE.format(i=i, app=app, password=password(i)))
            if i % OVERRIDE_EVERY == 0:
                parts.append(OVERRIDE.format(app=app))
        text = "".join(parts)
        (root / f"devices-{start // per_file:05d}.yaml").write_text(text, encoding="utf-8")
        total += len(text)
    return total


# --------------------------------------------------------------------------- children


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _floor(root: Path) -> dict[str, Any]:
    import yaml

    loader: Any = yaml.CSafeLoader
    kept = [
        list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader))
        for path in sorted(root.glob("*.yaml"))
    ]
    return {"documents": sum(len(docs) for docs in kept)}


def _worker(root: Path) -> dict[str, Any]:
    import logging

    started = time.perf_counter()
    from ajour_build.core.fleet import load_fleet
    from delivery.protocol import Status, Wait, decode_command, encode_status
    from delivery.targets import Targets
    from delivery.worker import Worker

    imported = time.perf_counter()
    logging.disable(logging.WARNING)  # the one status below finds no layout: a warning
    fleet = load_fleet([root])
    loaded = time.perf_counter()
    targets = Targets(fleet, registry=f"oci-layout://{root / 'no-layout'}")
    worker = Worker(targets)
    app, device = next(iter(fleet.devices))
    reply = worker.handle(app, device, encode_status(Status(version=b"0.0.0")))
    assert reply is not None and isinstance(decode_command(reply), Wait)
    phases = {"import": imported - started, "load": loaded - imported}
    phases["worker"] = time.perf_counter() - loaded
    return {"documents": len(fleet.devices) + len(fleet.applications), "phases": phases}


def child(mode: str, root: Path, max_mb: int) -> None:
    """Load ``root`` in this process, print one JSON line, and exit without tearing down."""
    limit = max_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        found = _floor(root) if mode == "floor" else _worker(root)
        found["rss_mb"] = _rss_mb()
    except MemoryError:
        found = {"error": f"out of memory (address space limit {max_mb} MB)"}
    print(json.dumps(found), flush=True)
    os._exit(0)  # freeing a million objects is not part of "ready"


# --------------------------------------------------------------------------- parent


@dataclass
class Run:
    mode: str
    devices: int
    seconds: float | None
    rss_mb: float | None
    error: str = ""
    phases: dict[str, float] | None = None  # worker: import, load, worker (s, in the child)


def run_child(mode: str, root: Path, devices: int, max_mb: int, timeout: float) -> Run:
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    cmd = [sys.executable, "-m", "benchmarks.fleet_scale", "--child", mode, str(root)]
    cmd += ["--max-mb", str(max_mb)]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return Run(mode, devices, None, None, f"not ready within {timeout:.0f} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Run(mode, devices, None, None, f"exit {done.returncode}: {tail}")
    report = json.loads(lines[-1])
    if "error" in report:
        return Run(mode, devices, None, None, str(report["error"]))
    # the child prints right after it is ready and then exits at once: its exit is "ready"
    seconds = time.perf_counter() - start
    return Run(mode, devices, seconds, float(report["rss_mb"]), phases=report.get("phases"))


def best(runs: list[Run]) -> Run:
    """The fastest run (RSS hardly varies; the smallest is kept)."""
    ok = [r for r in runs if r.seconds is not None and r.rss_mb is not None]
    if not ok:
        return runs[0]
    fastest = min(ok, key=lambda r: r.seconds or 0.0)
    return Run(
        fastest.mode,
        fastest.devices,
        fastest.seconds,
        min(r.rss_mb or 0.0 for r in ok),
        phases=fastest.phases,
    )


def measure(sizes: list[int], args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for devices in sizes:
        root = tmp / f"fleet-{devices}"
        size = write_fleet(root, devices, args.per_file)
        repeats = args.repeats if devices < 1_000_000 else 1
        runs: dict[str, list[Run]] = {m: [] for m in MODES}
        for _ in range(repeats):
            for mode in MODES:
                run = run_child(mode, root, devices, args.max_mb, args.timeout)
                runs[mode].append(run)
                print(f"  {devices:>9,} {mode:<6} {_show(run)}", file=sys.stderr, flush=True)
        floor, worker = best(runs["floor"]), best(runs["worker"])
        row = {"devices": devices, "bytes": size, "floor": asdict(floor), "worker": asdict(worker)}
        rows.append(row)
    return rows


def _show(run: Run) -> str:
    if run.seconds is None or run.rss_mb is None:
        return run.error
    parts = " ".join(f"{k} {v:.2f} s" for k, v in (run.phases or {}).items())
    return f"{run.seconds:7.2f} s {run.rss_mb:8.1f} MB  {parts}".rstrip()


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}{TIMES}" if a is not None and b else "—"


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| devices | MB of YAML | floor s | floor MB | worker s | worker MB | time ÷ floor"
        " | RSS ÷ floor | µs/device |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        f, w = row["floor"], row["worker"]
        per = f"{w['seconds'] / row['devices'] * 1e6:.1f}" if w["seconds"] else w["error"]
        cells = [
            f"{row['devices']:,}",
            f"{row['bytes'] / 1e6:.1f}",
            f"{f['seconds']:.2f}" if f["seconds"] else f["error"],
            f"{f['rss_mb']:.0f}" if f["rss_mb"] else "—",
            f"{w['seconds']:.2f}" if w["seconds"] else w["error"],
            f"{w['rss_mb']:.0f}" if w["rss_mb"] else "—",
            _ratio(w["seconds"], f["seconds"]),
            _ratio(w["rss_mb"], f["rss_mb"]),
            per,
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def goal_met(rows: list[dict[str, Any]]) -> bool | None:
    """Whether the 100k worker met the goal; None when there was no 100k run."""
    for row in rows:
        if row["devices"] == GOAL_DEVICES:
            w = row["worker"]
            return bool(w["seconds"] and w["seconds"] < GOAL_SECONDS and w["rss_mb"] <= GOAL_MB)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--no-million", action="store_true", help="leave the 1M fleet out")
    parser.add_argument("--sizes", help="comma-separated fleet sizes (overrides the defaults)")
    parser.add_argument("--per-file", type=int, default=10_000, help="devices per YAML file")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size below 1M")
    parser.add_argument("--max-mb", type=int, default=6144, help="address space per child")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), args.max_mb)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [10_000, 100_000] + ([] if args.no_million else [1_000_000])
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ajour-fleet-scale-") as tmp:
        rows = measure(sizes, args, Path(tmp))
    met = goal_met(rows)
    if args.json:
        report = {"python": platform.python_version(), "load": load, "rows": rows, "goal_met": met}
        print(json.dumps(report, indent=2))
    else:
        print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load {load:.2f}")
        print(table(rows))
        verdict = {True: "met", False: "MISSED", None: "not measured"}[met]
        print(f"goal at 100k devices (< {GOAL_SECONDS} s, ≤ {GOAL_MB:.0f} MB): {verdict}")
    return 1 if met is False else 0


if __name__ == "__main__":
    sys.exit(main())
