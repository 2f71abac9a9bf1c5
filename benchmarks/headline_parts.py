"""The headline benchmark's parts: the firmware repository (a 256 KiB c-blinky), the fleet
and installation config, the build service and the delivery worker as the processes their
CLIs start, the direct build, and the round trips an update takes by the protocol."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import git

from tests.registry import free_port
from tests.service import github_push

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGE_SIZE = 256 * 1024
ASSETS_SIZE = 248 * 1024  # read-only data in the image; code and zero padding make the rest
MTU = 512
APP = "blinky"
SECRET, TOKEN, EVENTS, STATUS = "bench-hook", "bench-api", "bench-events", "bench-status"
ARTIFACT = "build/blinky.bin"
ENTRYPOINT = REPO / "builder-images" / "arm-gcc" / "ajour-builder"
ARGS = ["--board", "mps2-an385"]

ASSETS_C = """\
/* Read-only data the firmware carries (a stand-in for fonts, tables, a radio stack). */
__asm__(".section .rodata.ajour_assets,\\"a\\"\\n.global ajour_assets\\n.balign 4\\n"
        "ajour_assets:\\n.incbin \\"assets/table.bin\\"\\n.previous\\n");
"""


def listen_port() -> int:
    """A free loopback port below the ephemeral range: one the kernel never hands to an
    outgoing connection (the benchmark's many MQTT clients) before the worker listens."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.Random().sample(range(max(1024, low - 8000), low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free loopback port below {low}")


def update_round_trips(data_bytes: int, mtu: int = MTU) -> int:
    """Round trips of one device's update by the protocol (docs/delivery.md): one status per
    ``Write`` (or ``WritePatch``) of ``mtu`` bytes, one answered by ``Swap``, and the status
    after the reboot, answered by ``Sync``."""
    return math.ceil(data_bytes / mtu) + 2


class FirmwareRepo:
    """A bare remote and a working clone (gitpython) holding c-blinky with 248 KiB of
    assets, its ``make`` padding the image to 256 KiB."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.remote = git.Repo.init(root / "remote.git", bare=True, initial_branch="main")
        self.work = git.Repo.clone_from(str(root / "remote.git"), root / "work")
        with self.work.config_writer() as cfg:
            cfg.set_value("user", "name", "Dev")
            cfg.set_value("user", "email", "dev@ajour.invalid")
        self.dir = root / "work"
        shutil.copytree(
            REPO / "examples" / "firmware" / "c-blinky",
            self.dir,
            ignore=shutil.ignore_patterns("build"),
            dirs_exist_ok=True,
        )
        (self.dir / "assets").mkdir()
        (self.dir / "assets" / "table.bin").write_bytes(random.Random(1).randbytes(ASSETS_SIZE))
        (self.dir / "src" / "assets.c").write_text(ASSETS_C)
        make = (self.dir / "Makefile").read_text()
        for old, new in (
            ("src/main.c\n", "src/main.c src/assets.c\n"),
            ("-Wl,--gc-sections", "-Wl,--gc-sections -Wl,--undefined=ajour_assets"),
            ("$(OBJCOPY) -O binary $< $@\n",
             f"$(OBJCOPY) -O binary $< $@\n\ttruncate -s {IMAGE_SIZE} $@\n"),
        ):  # fmt: skip
            if old not in make:
                raise SystemExit(f"examples/firmware/c-blinky/Makefile has no {old.strip()!r}")
            make = make.replace(old, new, 1)
        (self.dir / "Makefile").write_text(make)
        self.blinks = 4

    @property
    def uri(self) -> str:
        return f"file://{self.root / 'remote.git'}"

    def commit(self, version: str, one_line_change: bool) -> tuple[str, str]:
        """Commit ``version`` (its VERSION file), with a one-line change to main.c when asked."""
        try:
            before = self.remote.commit("main").hexsha
        except (git.BadName, ValueError):
            before = "0" * 40
        (self.dir / "VERSION").write_text(version + "\n")
        if one_line_change:
            main = self.dir / "src" / "main.c"
            old = f"#define BLINKS {self.blinks}u"
            self.blinks += 1
            main.write_text(main.read_text().replace(old, f"#define BLINKS {self.blinks}u", 1))
        self.work.git.add(A=True)
        after = self.work.index.commit(f"firmware {version}").hexsha
        return before, after

    def push(self) -> None:
        self.work.git.push("origin", "HEAD:refs/heads/main")
        self.work.close()
        self.remote.close()


def webhook(url: str, repo: FirmwareRepo, before: str, after: str) -> str:
    """The signed GitHub push webhook for the push; the id of the build it queued."""
    raw = json.dumps(github_push(repo.uri, "refs/heads/main", before, after)).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest(),
    }
    request = urllib.request.Request(f"{url}/webhooks/github", raw, headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        triggered = json.loads(response.read())["triggered"]
    if len(triggered) != 1:
        raise SystemExit(f"the push triggered {len(triggered)} builds, expected 1: {triggered}")
    return str(triggered[0]["id"])


def get_json(url: str, token: str) -> dict[str, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        found: dict[str, object] = json.loads(response.read())
        return found


def metrics(url: str, names: tuple[str, ...]) -> dict[str, float]:
    """Samples of the worker's ``GET /metrics`` (e.g. ``commands_total{type="sync"}``)."""
    request = urllib.request.Request(
        f"{url}/metrics", headers={"Authorization": f"Bearer {STATUS}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    found = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("ajour_delivery_") and name[15:] in found:
            found[name[15:]] = float(value)
    return found


def write_fleet(root: Path, devices: int, registry: str, repo: FirmwareRepo) -> Path:
    """``root/fleet``: ajour.yaml and the application with ``devices`` devices."""
    fleet = root / "fleet"
    fleet.mkdir(parents=True)
    (fleet / "ajour.yaml").write_text(
        f"registry: {{prefix: '{registry}/ajour', insecure: true}}\n"
        f"allowed_applications: [{APP}]\n"
        "sources: {allow_local: true}\n"
        f"service: {{runner: host, tokens: [{TOKEN}], webhooks: {{github: {SECRET}}}}}\n"
    )
    docs = [
        f"kind: Application\nmetadata: {{name: {APP}}}\nspec:\n  firmware:\n    container:\n"
        f"      image: {APP}:latest\n      build:\n        image: arm-gcc\n"
        f"        source: {{git: {{uri: '{repo.uri}', rev: main}}}}\n"
        f"        args: {json.dumps(ARGS)}\n        artifact: {{path: {ARTIFACT}}}\n"
    ]
    docs += [
        f"kind: Device\nmetadata: {{name: dev{i}, application: {APP}}}\n" for i in range(devices)
    ]
    (fleet / f"{APP}.yaml").write_text("---\n".join(docs))
    return fleet


@dataclass
class Proc:
    """A service process started by its CLI, its URL, and its log."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def cpu(self) -> float:
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def started(name: str, argv: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[Proc]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=out, env={**os.environ, **env})
        proc = Proc(name, process, url, log)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(
                            f"{name} did not start:\n{log.read_text()[-3000:]}"
                        ) from None
                    time.sleep(0.1)
            yield proc
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def build_service(root: Path, fleet: Path) -> AbstractContextManager[Proc]:
    """``ajour-build serve`` on the fleet (host runner, LocalBackend), on a free port."""
    port = free_port()
    argv = [
        str(BIN / "ajour-build"), "serve", "--fleet", str(fleet), "--config",
        str(fleet / "ajour.yaml"), "--port", str(port), "--state-dir", str(root / "state"),
        "--builders", str(REPO / "builder-images"), "--no-console",
    ]  # fmt: skip
    return started("the build service", argv, {}, f"http://127.0.0.1:{port}", root / "build.log")


def delivery_worker(
    root: Path, fleet: Path, mqtt_port: int, http_port: int, registry: str, poll: int
) -> AbstractContextManager[Proc]:
    """``ajour-delivery serve``: MQTT for devices, HTTP for the registry's notifications."""
    argv = [
        str(BIN / "ajour-delivery"), "serve", "--fleet", str(fleet), "--config",
        str(fleet / "ajour.yaml"), "--mqtt", f"mqtt://127.0.0.1:{mqtt_port}",
        "--http", f"127.0.0.1:{http_port}", "--registry", f"{registry}/ajour",
        "--poll-synced", str(poll),
    ]  # fmt: skip
    env = {"AJOUR_DELIVERY_EVENTS_TOKEN": EVENTS, "AJOUR_DELIVERY_STATUS_TOKEN": STATUS}
    url = f"http://127.0.0.1:{http_port}"
    return started("the delivery worker", argv, env, url, root / "worker.log")


def direct_build(repo: FirmwareRepo, commit: str, version: str, dest: Path) -> tuple[float, bytes]:
    """The same build with no trigger: a fresh clone of the commit, then the arm-gcc
    builder's entrypoint on the host; (seconds, image)."""
    shutil.rmtree(dest, ignore_errors=True)
    env = {
        **os.environ,
        "AJOUR_FIRMWARE_VERSION": version,
        "AJOUR_ARTIFACT_PATH": ARTIFACT,
        "AJOUR_SOURCE_COMMIT": commit,
    }
    begin = time.perf_counter()
    subprocess.run(["git", "clone", "-q", str(repo.root / "remote.git"), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", commit], check=True)
    subprocess.run([str(ENTRYPOINT), *ARGS], cwd=dest, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - begin
    return seconds, (dest / ARTIFACT).read_bytes()
