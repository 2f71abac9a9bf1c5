"""What a cluster cannot reach: loopback registries, ``file://`` sources and local images.

The renderer writes manifests for a cluster. A registry prefix on ``127.0.0.1``, a source on
this machine's file system or an image that exists only in this machine's podman storage
(``localhost/…``) is fine for ``ajour-build build`` and for the demo, but a PipelineRun
that names one fails in a cluster: its pods cannot pull, clone or push there. These are
warnings, not errors: a single-node cluster (kind, k3d, minikube) may be set up to reach them.
"""

from __future__ import annotations

from ajour_build.config import InstallationConfig
from ajour_build.core.hosts import is_loopback
from ajour_build.plan import PlannedBuild

DOC = "docs/tekton-backend.md#images-a-cluster-can-pull"


def _local_image(image: str) -> bool:
    """An image reference whose registry is this machine (``localhost/…``, ``127.0.0.1:5000/…``)."""
    first, slash, _ = image.partition("/")
    return (
        bool(slash)
        and ("." in first or ":" in first or first == "localhost")
        and (is_loopback(first))
    )


def cluster_warnings(builds: tuple[PlannedBuild, ...], config: InstallationConfig) -> list[str]:
    """One line per thing a cluster could not reach, each saying what to change."""
    out: list[str] = []
    prefix = config.registry.prefix
    if builds and is_loopback(prefix.split("/", 1)[0]):
        out.append(
            f"registry.prefix {prefix!r} ({config.source}) is a loopback address: the publish"
            " step in a cluster cannot push there; set it to a registry the cluster reaches"
            " (or AJOUR_REGISTRY__PREFIX)"
        )
    if builds and _local_image(config.tools_image):
        out.append(
            f"tools_image {config.tools_image!r} ({config.source}) exists only on this machine;"
            " a cluster cannot pull it. Build it from a checkout with ./scripts/tools-image"
            " REGISTRY/ajour/tools:0.1.0, push it (podman push REGISTRY/ajour/tools:0.1.0) and"
            f" set tools_image to it; see {DOC}"
        )
    builders = sorted({b.builder_image for b in builds if _local_image(b.builder_image)})
    for image in builders:
        out.append(
            f"builder image {image!r} exists only on this machine; a cluster cannot pull it."
            " Push it to a registry the cluster reaches and point its builder alias"
            f" (builders.<name>.image in ajour.yaml) at it; see {DOC}"
        )
    for build in builds:
        uri = build.build.source.git.uri
        if uri.lower().startswith("file:"):
            out.append(
                f"{build.name} ({', '.join(str(c) for c in build.consumers[:3])}) clones"
                f" {uri!r}, a path on this machine that a cluster's clone step cannot read;"
                " use an https:// or ssh:// URI for builds in a cluster"
            )
    return out
