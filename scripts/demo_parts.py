"""The demo's props: the git repository with its webhook hook, the fleet, processes."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
FLEET = REPO / "examples" / "fleet"
APP_NAME = "thermostat"
APP = """\
kind: Application
metadata: {{name: thermostat}}
spec:
  firmware:
    container:
      image: thermostat:latest
      build:
        image: arm-gcc
        source: {{git: {{uri: "{uri}", project: device, rev: main}}}}
        args: ["-C", "boot", "device-image"]
        artifact: {{path: boot/build/app-device.img}}
  rollout:
    waves:
      - {{selector: {{matchLabels: {{canary: "true"}}}}, dwell: 8s}}
      - {{percent: 10, dwell: 5s}}
      - {{percent: 50, dwell: 5s}}
      - {{percent: 100, dwell: 3s}}
    criteria:
      - {{outcome: reverted, threshold: 0.5, minFinished: 3}}
    confirmDeadline: 2m
    stallDeadline: 1m
---
kind: Application
metadata: {{name: rogue}}
spec:
  firmware:
    container:
      image: rogue:latest
      build:
        image: arm-gcc
        source: {{git: {{uri: "{uri}", rev: rogue}}}}
"""
# A git server's post-receive hook, as Gitea sends it: one signed push event per ref.
HOOK = """\
#!{python}
import hashlib, hmac, json, sys, urllib.request, uuid
from pathlib import Path

SECRET = (Path(__file__).parent / "ajour-webhook-secret").read_text().strip().encode()
for line in sys.stdin:
    before, after, ref = line.split()
    repo = {{"name": "thermostat", "full_name": "demo/thermostat", "clone_url": {uri!r}}}
    body = json.dumps({{"ref": ref, "before": before, "after": after, "repository": repo,
                       "pusher": {{"login": "demo"}}}}).encode()
    request = urllib.request.Request({url!r}, body, headers={{
        "Content-Type": "application/json", "X-Gitea-Event": "push",
        "X-Gitea-Delivery": str(uuid.uuid4()),
        "X-Gitea-Signature": hmac.new(SECRET, body, hashlib.sha256).hexdigest()}})
    with urllib.request.urlopen(request, timeout=30) as reply:
        answer = json.loads(reply.read())
    print("ajour:", reply.status, answer["explanation"])
    for build in answer["triggered"] + answer["alreadyQueued"]:
        print("ajour-build-id:", build["id"])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def app_spec(uri: str, devices: list[str], canaries: set[str]) -> str:
    """The fleet: the application with its staged rollout, and its devices (``canaries``
    labelled ``canary: "true"``, the rollout's first wave)."""
    return APP.format(uri=uri) + "".join(
        f"---\nmetadata: {{name: {name}, application: {APP_NAME}"
        + (', labels: {canary: "true"}' if name in canaries else "")
        + "}\n"
        for name in devices
    )


def _git(cwd: Path, *args: str) -> str:
    ident = ["-c", "user.name=Ajour demo", "-c", "user.email=demo@ajour.invalid"]
    result = subprocess.run(
        ["git", *ident, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout + result.stderr


def read(work: Path, name: str) -> str:
    """A file of the demo's clone."""
    return (work / "thermostat" / name).read_text()


def make_repository(work: Path, service_url: str, secret: str) -> Path:
    """A bare repository (the "server", with the webhook hook) and a clone holding device/."""
    bare = work / "thermostat.git"
    if bare.exists():
        shutil.rmtree(bare)
        shutil.rmtree(work / "thermostat", ignore_errors=True)
    _git(work, "init", "-q", "--bare", "-b", "main", str(bare))
    hook = bare / "hooks" / "post-receive"
    hook.write_text(
        HOOK.format(
            python=sys.executable, uri=f"file://{bare}", url=f"{service_url}/webhooks/gitea"
        )
    )
    hook.chmod(0o755)
    (bare / "hooks" / "ajour-webhook-secret").write_text(secret + "\n")
    (bare / "hooks" / "ajour-webhook-secret").chmod(0o600)
    clone = work / "thermostat"
    shutil.copytree(REPO / "device", clone / "device", ignore=shutil.ignore_patterns("build"))
    _git(clone, "init", "-q", "-b", "main")
    _git(clone, "remote", "add", "origin", str(bare))
    return bare


def push(
    bare: Path, work: Path, files: dict[str, str], console: Console, message: str = ""
) -> list[str]:
    """Commit ``files`` and push; return the build ids the hook's webhook triggered."""
    clone = work / "thermostat"
    for name, text in files.items():
        (clone / name).write_text(text)
    _git(clone, "add", "-A")
    _git(clone, "commit", "-qm", message or f"change {', '.join(files)}")
    output = _git(clone, "push", "-q", "origin", "main")
    for line in output.splitlines():
        if "ajour:" in line:
            console.print(f"  [dim]{line.strip()}[/]")
    return re.findall(r"ajour-build-id: (\S+)", output)


class Processes:
    """Services the demo starts; all of them stop on exit, Ctrl-C included."""

    def __init__(self, logs: Path, console: Console) -> None:
        self.logs = logs
        self.console = console
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Processes:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self

    def start(
        self, name: str, args: list[str], ready: str, env: dict[str, str] | None = None
    ) -> None:
        import os

        log = (self.logs / f"{name.split()[0]}-{name.split()[-1]}.log").open("wb")
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
        )
        log.close()
        self.running.append((name, proc))
        deadline = time.monotonic() + 60
        with self.console.status(f"starting the {name}"):
            while True:
                try:
                    if httpx.get(ready, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the {name} did not start; see {log.name}")
                time.sleep(0.1)
        base = "/".join(ready.split("/")[:3])
        self.console.print(f"[green]ok[/] {name} ready at {base}")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for name, proc in reversed(self.running):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.console.print(f"[dim]stopped the {name}[/]")
