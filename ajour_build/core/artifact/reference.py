"""Where a published firmware lives: ``oci://``, ``oci-layout://``, ``dir://``, ``hawkbit://``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ajour_build.core.errors import ArtifactError

_REPO = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
SCHEMES = ("oci", "oci-layout", "dir", "hawkbit")


@dataclass(frozen=True)
class OciRef:
    """``oci://host[:port]/repo[:tag][@digest]``."""

    host: str
    repository: str
    tag: str = "latest"
    digest: str = ""

    def __str__(self) -> str:
        ref = f"oci://{self.host}/{self.repository}:{self.tag}"
        return ref + (f"@{self.digest}" if self.digest else "")

    @property
    def image(self) -> str:
        return f"{self.host}/{self.repository}"


@dataclass(frozen=True)
class LayoutRef:
    """``oci-layout:///abs/dir[:tag]``: an OCI image layout directory on disk."""

    path: Path
    tag: str = "latest"

    def __str__(self) -> str:
        return f"oci-layout://{self.path}:{self.tag}"


@dataclass(frozen=True)
class DirRef:
    """``dir:///abs/dir/<name>``: Drogue's file layout, ``<name>.json`` + ``<name>.bin``."""

    path: Path
    name: str

    def __str__(self) -> str:
        return f"dir://{self.path / self.name}"


def _split_tag(rest: str) -> tuple[str, str, str]:
    digest = ""
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ArtifactError(f"digest {digest!r} is not sha256:<64 hex>")
    name, tag = rest, "latest"
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = rest.rsplit(":", 1)
    if not _TAG.fullmatch(tag):
        raise ArtifactError(f"tag {tag!r} is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]*)")
    return name, tag, digest


def parse_oci(url: str) -> OciRef:
    if not url.startswith("oci://"):
        raise ArtifactError(f"{url!r} is not an oci:// reference")
    rest = url[len("oci://") :]
    if "@" in rest.split("/", 1)[0]:
        raise ArtifactError(
            "credentials do not belong in the reference; use docker config.json or"
            " AJOUR_REGISTRY_USERNAME/AJOUR_REGISTRY_PASSWORD"
        )
    if "/" not in rest:
        raise ArtifactError(f"{url!r} needs a repository: oci://host[:port]/repo[:tag]")
    host, path = rest.split("/", 1)
    name, tag, digest = _split_tag(path)
    if not _REPO.fullmatch(name):
        raise ArtifactError(f"repository {name!r} is not valid (lowercase, [a-z0-9._-/])")
    return OciRef(host, name, tag, digest)


def parse_layout(url: str) -> LayoutRef:
    parts = urlsplit(url)
    if parts.scheme != "oci-layout" or parts.netloc not in ("", "localhost"):
        raise ArtifactError(f"{url!r} is not oci-layout:///absolute/dir[:tag]")
    path, tag = parts.path, "latest"
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    if not path.startswith("/") or not _TAG.fullmatch(tag):
        raise ArtifactError(f"{url!r} is not oci-layout:///absolute/dir[:tag]")
    return LayoutRef(Path(path), tag)


def parse_dir(url: str) -> DirRef:
    parts = urlsplit(url)
    path = Path(parts.path)
    if (
        parts.scheme != "dir"
        or not parts.path.startswith("/")
        or parts.netloc not in ("", "localhost")
    ):
        raise ArtifactError(f"{url!r} is not dir:///absolute/dir/<name>")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", path.name):
        raise ArtifactError(f"{path.name!r} is not a safe firmware name ([A-Za-z0-9._-])")
    return DirRef(path.parent, path.name)
