"""The end-to-end demo on embedded defaults: no cluster, no registry server, no Docker.

1. validate the example fleet and render Tekton v1 PipelineRuns (schema-checked);
2. make a git repository from examples/firmware/c-blinky whose post-receive hook sends a
   signed push webhook, as a git server would;
3. start the build service (``ajour-build serve``, which also serves the console) and the
   delivery worker (``ajour-delivery serve``); firmware goes to an OCI layout directory;
4. push: the hook fires the webhook, the service builds in the arm-gcc builder image
   (podman; ``--runner host`` without podman), publishes, and notifies delivery; the
   allowlist refuses an application that is not on it; QEMU runs the firmware;
5. 20 simulated devices update over HTTP (the embedded-update protocol);
6. bump VERSION, push again, and the devices follow; a trigger of the unchanged commit is
   answered from the build cache;
7. print a summary and where the console is; keep serving until Ctrl-C (``--exit`` stops
   right after the second rollout).

Every wait is on real readiness (HTTP endpoints, build states), never a fixed sleep.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_parts import (
    FLEET,
    REPO,
    Processes,
    app_spec,
    free_port,
    make_repository,
    push,
    run_qemu,
)

DEVICES = 20


class Demo:
    def __init__(self, console: Console, work: Path, runner: str) -> None:
        self.console = console
        self.work = work
        self.runner = runner
        self.bin = Path(sys.executable).parent
        self.token = secrets.token_urlsafe(24)
        self.hook_secret = secrets.token_urlsafe(24)
        self.service_url = f"http://127.0.0.1:{free_port()}"
        self.delivery_url = f"http://127.0.0.1:{free_port()}"
        self.layout = work / "oci"
        self.fleet = work / "fleet"
        self.state = work / "state"
        self.digests: dict[str, str] = {}

    def step(
        self, title: str, args: list[str], expect: int = 0
    ) -> subprocess.CompletedProcess[str]:
        started = time.perf_counter()
        with self.console.status(title):
            result = subprocess.run(args, capture_output=True, text=True, check=False)
        ok = result.returncode == expect
        took = time.perf_counter() - started
        self.console.print(
            f"{'[green]ok[/]' if ok else '[red]FAILED[/]'} {title} [dim]({took:.2f}s)[/]"
        )
        if not ok:
            self.console.print(result.stdout[-4000:], result.stderr[-4000:])
            raise SystemExit(f"demo step failed: {title}")
        return result

    def api(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.service_url, headers=headers, timeout=30)

    # -- the story -----------------------------------------------------------------------
    def specs(self) -> None:
        self.console.rule("1. fleet specs to Tekton v1")
        tool = str(self.bin / "ajour-build")
        self.step("validate examples/fleet", [tool, "validate", str(FLEET)])
        out = self.work / "pipelineruns"
        self.step(f"render PipelineRuns into {out}", [tool, "render", str(FLEET), "-o", str(out)])

    def setup(self, procs: Processes) -> Path:
        self.console.rule("2. a git repository, the build service and the delivery worker")
        bare = make_repository(self.work, self.service_url, self.hook_secret)
        self.console.print(f"[green]ok[/] git repository {bare} (post-receive hook → webhook)")
        self.fleet.mkdir(exist_ok=True)
        (self.fleet / "blinky.yaml").write_text(app_spec(f"file://{bare}", DEVICES))
        (self.fleet / "ajour.yaml").write_text(
            "allowed_applications: [blinky]\n"
            "sources: {allow_local: true}  # the demo's repository is on this machine\n"
            "builders:\n  arm-gcc: {image: localhost/ajour/builder-arm-gcc:0.2.0}\n"
            "service:\n"
            f"  runner: {self.runner}\n"
            f"  publish_to: oci-layout://{self.layout}\n"
            f"  notify: {self.delivery_url}/v1/events\n"
            f"  delivery_url: {self.delivery_url}\n"
            "  public_read: true\n"
        )
        token_file = self.work / "console-token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        if self.runner == "container":
            tool = str(self.bin / "ajour-build")
            self.step("base image (debootstrap + podman import; once)", [tool, "builders", "base"])
            self.step(
                "arm-gcc builder image (podman build; once)",
                [tool, "builders", "build", "arm-gcc", "--if-missing"],
            )
        self.layout.mkdir(exist_ok=True)
        procs.start(
            "delivery worker",
            [
                str(self.bin / "ajour-delivery"),
                "serve",
                "--fleet",
                str(self.fleet),
                "--http",
                self.delivery_url.removeprefix("http://"),
                "--registry",
                f"oci-layout://{self.layout}",
                "--insecure-no-auth",
            ],
            ready=f"{self.delivery_url}/v1/status",
        )
        env = {
            "AJOUR_SERVICE__TOKENS": json.dumps([self.token]),
            "AJOUR_SERVICE__WEBHOOKS__GITEA": self.hook_secret,
        }
        procs.start(
            "build service and console",
            [
                str(self.bin / "ajour-build"),
                "serve",
                "--fleet",
                str(self.fleet),
                "--port",
                self.service_url.rsplit(":", 1)[1],
                "--state-dir",
                str(self.state),
                "--builders",
                str(REPO / "builder-images"),
            ],
            ready=f"{self.service_url}/readyz",
            env=env,
        )
        return bare

    def refuse(self) -> None:
        with self.api() as c:
            reply = c.post("/api/v1/applications/rogue/trigger")
        assert reply.status_code == 403, reply.text
        self.console.print(f"  [yellow]{reply.json()['error'].split(';')[0]}[/] (HTTP 403)")

    def build(self, title: str, build_ids: list[str]) -> dict[str, Any]:
        """Follow the build the push triggered until it ends."""
        if len(build_ids) != 1:
            raise SystemExit(f"expected the push to trigger one build, got {build_ids}")
        started = time.perf_counter()
        last = ""
        with self.api() as c, self.console.status(title) as status:
            while True:
                build: dict[str, Any] = c.get(f"/api/v1/builds/{build_ids[0]}").json()
                if build["state"] not in ("queued", "running"):
                    break
                lines = c.get(f"/api/v1/builds/{build['id']}/log-lines").json()["lines"]
                last = lines[-1] if lines else last
                status.update(f"{title}: {build['state']} [dim]{last[:70]}[/]")
                time.sleep(0.2)
            if build["state"] != "succeeded":
                log = c.get(f"/api/v1/builds/{build['id']}/logs").text
                self.console.print(log[-4000:])
                raise SystemExit(f"the build {build['id']} {build['state']}: {build['failure']}")
        took = time.perf_counter() - started
        cached = " (cached)" if build["cached"] else ""
        self.console.print(
            f"[green]ok[/] {title}: {build['version']} {build['digest'][:19]}…{cached}"
            f" [dim]({took:.2f}s)[/]"
        )
        self.digests[build["version"]] = build["digest"]
        return build

    def devices(self, start: str) -> dict[str, int]:
        result = self.step(
            f"{DEVICES} simulated devices from {start} (embedded-update over HTTP)",
            [
                str(self.bin / "ajour-delivery"),
                "simulate",
                "--http",
                self.delivery_url,
                "--app",
                "blinky",
                "--devices",
                str(DEVICES),
                "--start-version",
                start,
                "--json",
            ],
        )
        versions: dict[str, int] = json.loads(result.stdout)["versions"]
        self.console.print(f"  devices per version: {versions}")
        return versions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", choices=["auto", "container", "host"], default="auto")
    parser.add_argument("--workdir", type=Path, help="Keep the demo's files here.")
    parser.add_argument(
        "--exit", action="store_true", help="Stop after the second rollout (default off a TTY)."
    )
    args = parser.parse_args()
    console = Console(highlight=False)
    started = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ajour-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    runner = args.runner
    if runner == "auto":
        runner = "container" if shutil.which("podman") and shutil.which("debootstrap") else "host"
    demo = Demo(console, work, runner)
    # SIGTERM cleans up like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with Processes(work / "logs", console) as procs:
        try:
            rounds = story(demo, procs)
        except KeyboardInterrupt:
            console.print("\n[yellow]interrupted: stopping what the demo started[/]")
            return 130
        summary(demo, rounds, time.perf_counter() - started)
        if rounds[-1][1] != {"1.1.0": DEVICES}:
            raise SystemExit("the devices did not all reach 1.1.0")
        if args.exit or not sys.stdin.isatty():
            return 0
        console.print("\nPress Ctrl-C to stop the service and the worker.")
        try:
            signal.pause()
        except KeyboardInterrupt:
            console.print("\nstopping")
    return 0


def story(demo: Demo, procs: Processes) -> list[tuple[str, dict[str, int]]]:
    demo.specs()
    bare = demo.setup(procs)
    demo.console.rule("3. push → webhook → build → publish")
    demo.refuse()
    first = demo.build("push 1.0.0", push(bare, demo.work, {"VERSION": "1.0.0\n"}, demo.console))
    elf = demo.state / "builds" / first["backendRef"] / "artifacts" / "blinky.elf"
    printed = run_qemu(elf)
    demo.console.print(f"  QEMU printed: [bold]{printed}[/]")
    demo.console.rule(f"4. delivery: {DEVICES} simulated devices over HTTP")
    rounds = [("devices start on 0.9.0", demo.devices("0.9.0"))]
    demo.console.rule("5. bump the version and push again")
    demo.build("push 1.1.0", push(bare, demo.work, {"VERSION": "1.1.0\n"}, demo.console))
    rounds.append(("after the 1.1.0 push", demo.devices("1.0.0")))
    with demo.api() as c:
        again = c.post("/api/v1/applications/blinky/trigger").json()["triggered"]
    demo.build("trigger the same commit again", [b["id"] for b in again])
    return rounds


def summary(demo: Demo, rounds: list[tuple[str, dict[str, int]]], elapsed: float) -> None:
    table = Table("round", "devices per version")
    for label, versions in rounds:
        table.add_row(label, ", ".join(f"{v}: {n}" for v, n in sorted(versions.items())))
    digests = Table("version", "build digest")
    for version, digest in sorted(demo.digests.items()):
        digests.add_row(version, digest)
    demo.console.rule("summary")
    demo.console.print(table, digests)
    demo.console.print(
        f"Console: {demo.service_url}/  (read-only views are open; to trigger builds, log in"
        f" with the token in {demo.work / 'console-token'})"
        f"\nREST API: {demo.service_url}/docs    delivery worker: {demo.delivery_url}/v1/status"
        f"\nFirmware (OCI layout): {demo.layout}/blinky   build records: {demo.state}"
        f"\nLogs of the service and the worker: {demo.work / 'logs'}"
        f"\ndone in {elapsed:.1f}s"
    )


if __name__ == "__main__":
    os.environ.pop("AJOUR_CONFIG", None)
    sys.exit(main())
