"""The end-to-end demo on embedded defaults: no cluster, no registry server, no Docker.

A continuous fleet of one application, ``thermostat``, with a staged rollout (canaries →
10 % → 50 % → 100 %, a few seconds of dwell each, pause when canaries revert): 3 QEMU
devices running the real bootloader and updater (device/) behind ``ajour-delivery gateway``
relays, and a few hundred simulated devices polling over HTTP.

1. validate the example fleet and render Tekton v1 PipelineRuns (schema-checked);
2. a git repository holding device/, whose post-receive hook sends a signed push webhook;
   the build service (``ajour-build serve``, with the console) hands every build an ed25519
   image key (the MCUboot image is signed with it in the builder; the QEMU bootloader holds
   its public half) and signs what it publishes (cosign-compatible), and the delivery
   worker serves only what that key signed;
3. push 1.0.0: built by the arm-gcc builder, published, the devices start on it;
4. push 1.1.0: the rollout goes wave by wave, the canaries (QEMU ones too) confirm first;
5. push a bad 1.2.0 (the app never confirms): the canaries revert, the rollout pauses;
6. push the one-line fix as 1.2.1: it supersedes the paused rollout and reaches every
   device by delta patch;
7. print a summary and where the console is; keep serving until Ctrl-C (``--exit`` stops
   right after the summary).

Every wait is on real readiness (HTTP endpoints, build and rollout states), never a fixed
sleep.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from demo_parts import (
    APP_NAME,
    FLEET,
    REPO,
    Processes,
    app_spec,
    free_port,
    make_repository,
)
from demo_report import summary
from demo_story import SIMULATED, story

from ajour_devices.firmware import image_signature_ok

QEMU_DEVICES = 3
SIM_CANARIES = 5


class Demo:
    def __init__(self, console: Console, work: Path, runner: str, devices: int) -> None:
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
        self.qemu = [f"qemu-{i}" for i in range(QEMU_DEVICES)]
        self.simulated = [f"sim-{i:03d}" for i in range(devices)]
        self.canaries = {*self.qemu, *self.simulated[:SIM_CANARIES]}
        self.builds: list[dict[str, Any]] = []
        self.boot_pubkey = b""  # the image key's public half, built into the bootloader

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

    def worker(self) -> httpx.Client:
        return httpx.Client(base_url=self.delivery_url, timeout=30)

    # -- the stage -----------------------------------------------------------------------
    def specs(self) -> None:
        self.console.rule("1. fleet specs to Tekton v1")
        tool = str(self.bin / "ajour-build")
        self.step("validate examples/fleet", [tool, "validate", str(FLEET)])
        out = self.work / "pipelineruns"
        self.step(f"render PipelineRuns into {out}", [tool, "render", str(FLEET), "-o", str(out)])

    def keys(self) -> tuple[Path, Path]:
        """The publisher's signing key (ECDSA P-256, as cosign makes) and its public half."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        private, public = self.work / "keys" / "sign.key", self.work / "keys" / "sign.pub"
        private.parent.mkdir(exist_ok=True)
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        private.chmod(0o600)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return private, public

    def image_key(self) -> Path:
        """The image key (ed25519, PKCS#8 PEM as ``imgtool keygen -t ed25519`` writes it)
        the builder signs MCUboot images with; its raw public half goes to the bootloader."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = ed25519.Ed25519PrivateKey.generate()
        path = self.work / "keys" / "image.key"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        self.boot_pubkey = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return path

    def setup(self, procs: Processes) -> Path:
        self.console.rule("2. a git repository, the build service and the delivery worker")
        bare = make_repository(self.work, self.service_url, self.hook_secret)
        self.console.print(f"[green]ok[/] git repository {bare} (post-receive hook → webhook)")
        sign_key, sign_pub = self.keys()
        self.console.print(f"[green]ok[/] signing key {sign_key} (ECDSA P-256, as cosign's)")
        image_key = self.image_key()
        self.console.print(
            f"[green]ok[/] image key {image_key} (ed25519, as imgtool's): every build signs its"
            " MCUboot image with it, the QEMU bootloader holds its public half"
        )
        self.fleet.mkdir(exist_ok=True)
        devices = [*self.qemu, *self.simulated]
        (self.fleet / "thermostat.yaml").write_text(
            app_spec(f"file://{bare}", devices, self.canaries)
        )
        (self.fleet / "ajour.yaml").write_text(
            f"allowed_applications: [{APP_NAME}]\n"
            "sources: {allow_local: true}  # the demo's repository is on this machine\n"
            "builders:\n  arm-gcc: {image: localhost/ajour/builder-arm-gcc:0.2.0}\n"
            "service:\n"
            f"  runner: {self.runner}\n"
            f"  publish_to: oci-layout://{self.layout}\n"
            f"  notify: {self.delivery_url}/v1/events\n"
            f"  delivery_url: {self.delivery_url}\n"
            "  public_read: true\n"
            f"signing: {{key: {sign_key}, image_key: {image_key}}}  # read at start\n"
            f"delivery:\n  trust:\n    {APP_NAME}: {{keys: [{sign_pub}]}}\n"
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
                "--rollout-db",
                str(self.work / "rollouts.db"),
                "--insecure-no-auth",
            ],
            ready=f"{self.delivery_url}/v1/status",
        )
        env = {
            "AJOUR_SERVICE__TOKENS": json.dumps([self.token]),
            "AJOUR_SERVICE__WEBHOOKS__GITEA": self.hook_secret,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",  # imgtool (host)
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
        signed = image_signature_ok(self.image(build), self.boot_pubkey)
        if not signed:
            raise SystemExit(f"the build {build['id']} made an image the bootloader refuses")
        self.console.print(
            f"[green]ok[/] {title}: {build['version']} {build['digest'][:19]}… signed; its"
            f" MCUboot image ED25519-signed with the image key [dim]({took:.2f}s)[/]"
        )
        self.builds.append({**build, "seconds": round(took, 2), "imageSigned": signed})
        return build

    def image(self, build: dict[str, Any]) -> bytes:
        """The MCUboot image a build made (its artifact)."""
        artifacts: Path = self.state / "builds" / build["backendRef"] / "artifacts"
        return (artifacts / "app-device.img").read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", choices=["auto", "container", "host"], default="auto")
    parser.add_argument("--workdir", type=Path, help="Keep the demo's files here.")
    parser.add_argument(
        "--devices", type=int, default=SIMULATED, help="Simulated devices (default %(default)s)."
    )
    parser.add_argument("--json", type=Path, help="Write the summary as JSON to this file.")
    parser.add_argument(
        "--exit", action="store_true", help="Stop after the summary (default off a TTY)."
    )
    parser.add_argument(
        "--serve", action="store_true", help="Keep serving after the summary, even off a TTY."
    )
    args = parser.parse_args()
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    started = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ajour-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    runner = args.runner
    if runner == "auto":
        runner = "container" if shutil.which("podman") and shutil.which("debootstrap") else "host"
    demo = Demo(console, work, runner, args.devices)
    # SIGTERM cleans up like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with Processes(work / "logs", console) as procs:
        try:
            with story(demo, procs) as facts:
                facts["seconds"] = round(time.perf_counter() - started, 1)
                summary(demo, facts)
                if args.json:
                    args.json.write_text(json.dumps(facts, indent=2) + "\n")
                if args.exit or not (args.serve or sys.stdin.isatty()):
                    return 0
                console.print("\nThe fleet keeps polling. Press Ctrl-C to stop everything.")
                signal.pause()
        except KeyboardInterrupt:
            console.print("\n[yellow]interrupted: stopping what the demo started[/]")
            return 130
    return 0


if __name__ == "__main__":
    os.environ.pop("AJOUR_CONFIG", None)
    sys.exit(main())
