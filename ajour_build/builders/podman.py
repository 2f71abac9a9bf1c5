"""Running podman the way this project needs it: no bridge network, runc, sane ulimits.

Containers never get a bridge network (its private-range addresses are off limits here
and a build has no business on the network): the generated ``containers.conf`` makes
``none`` the default network mode, and image builds use the host network explicitly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ajour_build.core.errors import AjourError
from ajour_build.core.files import atomic_write

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
netns = "none"

[engine]
runtime = "runc"
"""


def podman_path() -> str:
    found = shutil.which("podman")
    if found is None:
        raise AjourError(
            "podman is not installed: install it (apt-get install podman runc) or use --runner host"
        )
    return found


def environment(state_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for podman commands, with Ajour's ``containers.conf``."""
    env = dict(os.environ if base is None else base)
    if "CONTAINERS_CONF" not in env:
        conf = state_dir / "containers.conf"
        if not conf.is_file() or conf.read_text() != CONTAINERS_CONF:
            conf.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(conf, CONTAINERS_CONF)
        env["CONTAINERS_CONF"] = str(conf)
    return env


def image_exists(ref: str, env: Mapping[str, str]) -> bool:
    result = subprocess.run(
        [podman_path(), "image", "exists", ref], env=dict(env), capture_output=True, check=False
    )
    return result.returncode == 0


@contextmanager
def api_service(state_dir: Path, env: Mapping[str, str]) -> Iterator[str]:
    """Start ``podman system service`` on a private socket; yield its ``unix://`` URL."""
    sock = state_dir / "podman.sock"
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)
    url = f"unix://{sock}"
    proc = subprocess.Popen(
        [podman_path(), "system", "service", "--time=0", url],
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for_socket(sock, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        sock.unlink(missing_ok=True)


def _wait_for_socket(sock: Path, proc: subprocess.Popen[bytes]) -> None:
    import socket
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AjourError(f"podman system service exited: {err.strip()[-500:]}")
        if sock.exists():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(sock))
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise AjourError("podman system service did not open its socket within 20s")
