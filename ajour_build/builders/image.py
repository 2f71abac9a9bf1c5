"""Building builder images and their base image with podman (argv lists, no shell)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ajour_build.builders import podman
from ajour_build.builders.catalog import Builder
from ajour_build.core.errors import AjourError


def build_image(builder: Builder, base_image: str, env: Mapping[str, str]) -> str:
    """``podman build`` the builder; return the image id."""
    argv = [
        podman.podman_path(),
        "build",
        "--pull=never",
        "--network=host",
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "--tag",
        builder.spec.ref,
        "--file",
        str(builder.containerfile),
        str(builder.directory),
    ]
    result = subprocess.run(argv, env=dict(env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(f"  | {ln}" for ln in (result.stdout + result.stderr).splitlines()[-20:])
        raise AjourError(f"podman build of {builder.spec.ref} failed:\n{tail}")
    inspect = subprocess.run(
        [podman.podman_path(), "image", "inspect", "--format", "{{.Id}}", builder.spec.ref],
        env=dict(env),
        capture_output=True,
        text=True,
        check=True,
    )
    return inspect.stdout.strip()


def _sources(root: Path, suite: str, mirror: str) -> None:
    """Point apt at the suite, its updates and its security archive (as Debian's images do)."""
    security = mirror.rstrip("/").removesuffix("/debian") + "/debian-security"
    (root / "etc" / "apt" / "sources.list").write_text(
        f"deb {mirror} {suite} main\n"
        f"deb {mirror} {suite}-updates main\n"
        f"deb {security} {suite}-security main\n"
    )


def ensure_base_image(
    image: str, suite: str, mirror: str, env: Mapping[str, str], state_dir: Path
) -> bool:
    """Create ``image`` from ``debootstrap --variant=minbase``; False if it already exists."""
    if podman.image_exists(image, env):
        return False
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise AjourError("debootstrap is not installed (apt-get install debootstrap)")
    state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=state_dir) as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(
            [debootstrap, "--variant=minbase", suite, str(root), mirror],
            check=True,
            capture_output=True,
        )
        _sources(root, suite, mirror)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [podman.podman_path(), "import", "-", image],
            stdin=tar.stdout,
            env=dict(env),
            check=True,
            capture_output=True,
        )
        if tar.stdout is not None:
            tar.stdout.close()
        if tar.wait() != 0:
            raise AjourError("tar of the debootstrap root failed")
    return True
