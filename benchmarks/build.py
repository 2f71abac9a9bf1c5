"""Build benchmark: the local runner's overhead, and cold versus cached builds.

Baselines measured in the same run:

* **host**: the arm-gcc builder's entrypoint run directly on a fresh checkout
  (``sh builder-images/arm-gcc/ajour-builder``) versus ``LocalRunner`` with the host engine
  (resolve, clone, build, artifact checks, records), cache off;
* **container**: ``podman run --network=none`` of the builder image on a fresh checkout
  versus ``LocalRunner`` with the container engine (Docker API over podman's socket);
* **cache**: a cold build versus a cache hit of the same input.

    python benchmarks/build.py [--repeats 5] [--json]

Needs podman with ``localhost/ajour/builder-arm-gcc:0.2.0`` (``./scripts/demo`` or
``ajour-build builders build arm-gcc`` make it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ajour_build.builders import podman  # noqa: E402
from ajour_build.builders.catalog import load_catalog  # noqa: E402
from ajour_build.config import load_config  # noqa: E402
from ajour_build.core.fleet import load_fleet  # noqa: E402
from ajour_build.plan import PlannedBuild, plan_builds  # noqa: E402
from ajour_build.runner.container import ContainerEngine  # noqa: E402
from ajour_build.runner.host import HostEngine  # noqa: E402
from ajour_build.runner.job import Engine  # noqa: E402
from ajour_build.runner.local_runner import LocalRunner  # noqa: E402
from ajour_build.runner.state_dir import StateDir  # noqa: E402

IMAGE = "localhost/ajour/builder-arm-gcc:0.2.0"
ENV = {
    "AJOUR_FIRMWARE_VERSION": "1.0.0",
    "AJOUR_ARTIFACT_PATH": "build/blinky.bin",
    "AJOUR_SOURCE_COMMIT": "bench",
}
ARGS = ["--board", "mps2-an385"]


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def git_repo(path: Path) -> None:
    shutil.copytree(
        REPO / "examples" / "firmware" / "c-blinky", path, ignore=shutil.ignore_patterns("build")
    )
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b.invalid", "commit", "-qm", "fw"],
    ):
        subprocess.run(["git", *cmd], cwd=path, check=True)


def fresh_checkout(repo: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True)
    return dest


def planned(tmp: Path, repo: Path) -> PlannedBuild:
    fleet = tmp / "fleet"
    fleet.mkdir()
    (fleet / "app.yaml").write_text(
        "kind: Application\nmetadata: {name: blinky}\nspec:\n  firmware:\n    container:\n"
        "      image: blinky:latest\n      build:\n        image: arm-gcc\n"
        f"        source: {{git: {{uri: 'file://{repo}', rev: main}}}}\n"
        "        args: ['--board', 'mps2-an385']\n        artifact: {path: build/blinky.bin}\n"
    )
    config = load_config(
        None,
        env={
            "AJOUR_ALLOWED_APPLICATIONS": '["blinky"]',
            "AJOUR_SOURCES__ALLOW_LOCAL": "true",
            "AJOUR_BUILDERS": json.dumps({"arm-gcc": {"image": IMAGE}}),
        },
    )
    (build,) = plan_builds(load_fleet([fleet]), config).require_allowed().builds
    return build


def run(repeats: int) -> dict[str, Any]:
    catalog = load_catalog(REPO / "builder-images")
    entry = next(b for b in catalog if b.name == "arm-gcc").entrypoint
    with tempfile.TemporaryDirectory(prefix="ajour-bench-build-") as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        git_repo(repo)
        build = planned(tmp, repo)
        penv = podman.environment(tmp / "podman")
        if not podman.image_exists(IMAGE, penv):
            raise SystemExit(f"{IMAGE} is missing: run ajour-build builders build arm-gcc")

        def direct_host() -> None:
            work = fresh_checkout(repo, tmp / "direct")
            subprocess.run(
                [str(entry), *ARGS],
                cwd=work,
                env={**os.environ, **ENV},
                check=True,
                capture_output=True,
            )

        def direct_container() -> None:
            work = fresh_checkout(repo, tmp / "direct-c")
            subprocess.run(["chown", "-R", "10001:10001", str(work)], check=True)
            argv = [
                "podman",
                "run",
                "--rm",
                "--network=none",
                "-v",
                f"{work}:/workspace/source",
                "-w",
                "/workspace/source",
            ]
            for k, v in ENV.items():
                argv += ["-e", f"{k}={v}"]
            subprocess.run([*argv, IMAGE, *ARGS], env=penv, check=True, capture_output=True)

        def runner(engine: Engine, cache: bool, state: str) -> Callable[[], object]:
            local = LocalRunner(StateDir(tmp / state), engine, catalog, cache)
            return lambda: local.run(build, version="1.0.0")

        results: dict[str, list[float]] = {}
        results["host_direct"] = timed(direct_host, repeats)
        results["host_runner"] = timed(runner(HostEngine(), False, "s1"), repeats)
        results["container_direct"] = timed(direct_container, repeats)
        with podman.api_service(tmp / "api", penv) as url:
            engine = ContainerEngine(url)
            results["container_runner"] = timed(runner(engine, False, "s2"), repeats)
            warm = runner(engine, True, "s3")
            warm()  # fill the cache
            results["cached"] = timed(warm, repeats)
    med = {k: statistics.median(v) for k, v in results.items()}
    return {
        "benchmark": "build",
        "repeats": repeats,
        "median_seconds": med,
        "runner_overhead_host": med["host_runner"] / med["host_direct"],
        "runner_overhead_container": med["container_runner"] / med["container_direct"],
        "cold_vs_cached": med["container_runner"] / med["cached"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    med = report["median_seconds"]
    print(f"median of {args.repeats} runs, c-blinky in the arm-gcc builder")
    for name in ("host_direct", "host_runner", "container_direct", "container_runner", "cached"):
        print(f"  {name:18s} {med[name] * 1000:8.1f} ms")
    print(f"local runner / direct entrypoint, host:      {report['runner_overhead_host']:.2f}x")
    print(
        f"local runner / podman run, container:        {report['runner_overhead_container']:.2f}x"
    )
    print(f"cold build / cached build:                   {report['cold_vs_cached']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
