"""The end-to-end demo on embedded defaults (no cluster).

1. validate the example fleet and render Tekton v1 PipelineRuns (schema-checked);
2. show the allowlist refusing an application;
3. make a local git repository from examples/firmware/c-blinky, build it with the local
   runner in the arm-gcc builder image (podman; ``--runner host`` without podman), run the
   firmware in QEMU and read back the stamped version;
4. build again: the cache answers in well under a second;
5. publish to an OCI layout dir (the embedded default), start the delivery worker, and
   update 20 simulated devices over HTTP; bump to 1.1.0, publish to the same tag, notify
   the worker, and watch the devices follow.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
FLEET = REPO / "examples" / "fleet"
QEMU = [
    "qemu-system-arm",
    "-M",
    "mps2-an385",
    "-nographic",
    "-monitor",
    "none",
    "-serial",
    "none",
    "-semihosting-config",
    "enable=on,target=native",
]
APP = """\
kind: Application
metadata: {{name: blinky}}
spec:
  firmware:
    container:
      image: blinky:latest
      build:
        image: arm-gcc
        source: {{git: {{uri: "file://{repo}", rev: main}}}}
        args: ["--board", "mps2-an385"]
        artifact: {{path: build/blinky.bin}}
"""


class Demo:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.tool = str(Path(sys.executable).parent / "ajour-build")

    def run(self, title: str, args: list[str], expect: int = 0) -> subprocess.CompletedProcess[str]:
        started = time.perf_counter()
        with self.console.status(title):
            result = subprocess.run(args, capture_output=True, text=True, check=False)
        took = time.perf_counter() - started
        ok = result.returncode == expect
        self.console.print(
            f"{'[green]ok[/]' if ok else '[red]FAILED[/]'} {title} [dim]({took:.2f}s)[/]"
        )
        if not ok:
            self.console.print(result.stdout[-4000:], result.stderr[-4000:])
            raise SystemExit(f"demo step failed: {title}")
        return result

    def ajour(self, title: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        return self.run(title, [self.tool, *args], expect)


def git_repo(path: Path) -> None:
    shutil.copytree(
        REPO / "examples" / "firmware" / "c-blinky", path, ignore=shutil.ignore_patterns("build")
    )
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        [
            "-c",
            "user.name=Ajour demo",
            "-c",
            "user.email=demo@ajour.invalid",
            "commit",
            "-qm",
            "blinky firmware",
        ],
    ):
        subprocess.run(["git", *cmd], cwd=path, check=True)


DEVICES = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(worker: subprocess.Popen[str], timeout: float = 20) -> None:
    """Read the worker's start-up lines until it says it serves (no sleep-based races)."""
    deadline = time.monotonic() + timeout
    assert worker.stderr is not None
    seen = ""
    while time.monotonic() < deadline:
        line = worker.stderr.readline()
        seen += line
        if "devices in the fleet" in line:
            return
        if not line and worker.poll() is not None:
            break
    raise SystemExit(f"the delivery worker did not start:\n{seen}")


def podman_works() -> bool:
    return shutil.which("podman") is not None and shutil.which("debootstrap") is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runner", choices=["auto", "container", "host"], default="auto")
    parser.add_argument("--workdir", type=Path, help="Keep the demo's files here.")
    args = parser.parse_args()
    console = Console(highlight=False)
    demo = Demo(console)
    started = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ajour-demo-"))
    work.mkdir(parents=True, exist_ok=True)

    console.rule("1. fleet specs to Tekton v1")
    demo.ajour("validate examples/fleet", "validate", str(FLEET))
    out = work / "pipelineruns"
    demo.ajour(f"render PipelineRuns into {out}", "render", str(FLEET), "-o", str(out))
    rogue = work / "rogue"
    rogue.mkdir(exist_ok=True)
    text = (FLEET / "blinky.yaml").read_text().split("---")[0]
    (rogue / "rogue.yaml").write_text(text.replace("name: blinky", "name: rogue"))
    refusal = demo.ajour(
        "the allowlist refuses an application",
        "render",
        str(FLEET),
        str(rogue),
        "--config",
        str(FLEET / "ajour.yaml"),
        "--stdout",
        expect=1,
    )
    console.print(f"  [yellow]{refusal.stderr.strip().splitlines()[0]}[/]")

    console.rule("2. source to firmware, locally")
    runner = args.runner
    if runner == "auto":
        runner = "container" if podman_works() else "host"
    repo = work / "blinky.git"
    if not repo.exists():
        git_repo(repo)
    fleet = work / "fleet"
    fleet.mkdir(exist_ok=True)
    devices = "".join(
        f"---\nmetadata: {{name: dev{i}, application: blinky}}\n" for i in range(DEVICES)
    )
    (fleet / "blinky.yaml").write_text(APP.format(repo=repo) + devices)
    (fleet / "ajour.yaml").write_text(
        "allowed_applications: [blinky]\n"
        "builders:\n  arm-gcc: {image: localhost/ajour/builder-arm-gcc:0.1.0}\n"
    )
    if runner == "container":
        demo.ajour("base image (debootstrap + podman import; once)", "builders", "base")
        demo.ajour(
            "arm-gcc builder image (podman build; once)",
            "builders",
            "build",
            "arm-gcc",
            "--if-missing",
        )
    state = work / "state"
    layout = work / "oci"
    port = free_port()
    worker_url = f"http://127.0.0.1:{port}"

    def build_args(version: str) -> list[str]:
        return [
            str(fleet),
            "--app",
            "blinky",
            "--runner",
            runner,
            "--state-dir",
            str(state),
            "--builders",
            str(REPO / "builder-images"),
            "--version",
            version,
            "--json",
        ]

    def build(version: str, *extra: str) -> dict[str, object]:
        args_ = [
            *build_args(version),
            "--publish",
            "--to",
            f"oci-layout://{layout}/blinky:latest",
            "--notify",
            f"{worker_url}/v1/events",
            *extra,
        ]
        record: dict[str, object] = json.loads(
            demo.ajour(f"build + publish blinky {version} ({runner})", "build", *args_).stdout
        )[0]
        return record

    first = build("1.0.0", "--no-cache")
    elf = state / "builds" / str(first["id"]) / "artifacts" / "blinky.elf"
    printed = demo.run("run the firmware in QEMU (mps2-an385)", [*QEMU, "-kernel", str(elf)])
    console.print(f"  QEMU printed: [bold]{(printed.stdout + printed.stderr).strip()}[/]")
    again = json.loads(demo.ajour("build again (cache)", "build", *build_args("1.0.0")).stdout)[0]
    console.print(f"  second build: cached={again['cached']} in {again['duration']:.2f}s")

    console.rule(f"3. delivery: {DEVICES} simulated devices over HTTP")
    tool = str(Path(sys.executable).parent / "ajour-delivery")
    worker = subprocess.Popen(
        [
            tool,
            "serve",
            "--fleet",
            str(fleet),
            "--http",
            f"127.0.0.1:{port}",
            "--registry",
            f"oci-layout://{layout}",
            "--insecure-no-auth",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rounds: list[tuple[str, dict[str, int]]] = []
    try:
        wait_ready(worker)
        console.print(f"[green]ok[/] delivery worker serving on {worker_url}")
        for start, label in (("0.9.0", "devices start on 0.9.0"), ("1.0.0", None)):
            if label is None:
                build("1.1.0")  # bump: build, publish to the same tag, notify the worker
            result = json.loads(
                demo.run(
                    f"simulate {DEVICES} devices (embedded-update over HTTP)",
                    [
                        tool,
                        "simulate",
                        "--http",
                        worker_url,
                        "--app",
                        "blinky",
                        "--devices",
                        str(DEVICES),
                        "--start-version",
                        start,
                        "--json",
                    ],
                ).stdout
            )
            rounds.append((label or "after the 1.1.0 push", result["versions"]))
    finally:
        worker.terminate()
        worker.wait(10)
    published = first.get("published")
    digest = published.get("digest", "-") if isinstance(published, dict) else "-"
    table = Table("round", "devices per version")
    for label, versions in rounds:
        table.add_row(label, ", ".join(f"{v}: {n}" for v, n in sorted(versions.items())))
    console.print(table)
    console.print(
        f"\nPipelineRuns: {out}/"
        f"\n  apply: kubectl apply -n ajour -R -f pipelines/ && kubectl apply -f {out}/"
        f"\nBuild records and artifacts: {state}/builds/"
        f"\nFirmware (OCI layout): {layout}/blinky (ajour-build inspect"
        f" oci-layout://{layout}/blinky:latest)"
        f"\nbuild digest: {digest}"
        f"\ndone in {time.perf_counter() - started:.1f}s"
    )
    if rounds[-1][1] != {"1.1.0": DEVICES}:
        raise SystemExit("the devices did not all reach 1.1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
