"""Container mode: run the builder image through the Docker Engine API.

One code path for both engines: the ``docker`` library talks to a Docker engine or to
podman's Docker-compatible socket (``podman system service``). The container gets no
network unless the builder's ``builder.yaml`` asks for it, and then the host network,
never a bridge.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import requests.exceptions

from ajour_build.core.errors import BuildCancelled, BuildError
from ajour_build.runner.job import BuildJob, BuildLog

WORKSPACE = "/workspace"
API_VERSION = "1.41"


@dataclass
class ContainerEngine:
    base_url: str
    name: str = "container"
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.base_url, version=API_VERSION)
        return self._client

    def _image(self, ref: str) -> Any:
        try:
            return self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            raise BuildError(
                f"builder image {ref!r} does not exist in the container engine; build it with"
                " `ajour-build builders build <name>` or fix build.image"
            ) from None
        except (docker.errors.APIError, requests.exceptions.ConnectionError) as exc:
            raise BuildError(f"container engine at {self.base_url} failed: {exc}") from None

    def image_id(self, job: BuildJob) -> str:
        return str(self._image(job.image).id)

    def _user(self, image: Any, job: BuildJob) -> dict[str, Any]:
        """Let the image's non-root user write the workspace."""
        user = str(image.attrs.get("Config", {}).get("User") or "")
        if os.geteuid() != 0:
            return {"userns_mode": "keep-id"}  # rootless podman: map our uid in
        uid, _, gid = user.partition(":")
        if uid.isdigit():
            owner, group = int(uid), int(gid) if gid.isdigit() else int(uid)
            for root, dirs, files in os.walk(job.workspace):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(root, name), owner, group)
            os.lchown(job.workspace, owner, group)
        return {}

    def run(self, job: BuildJob, log: BuildLog) -> int:
        image = self._image(job.image)
        extra = self._user(image, job)
        workdir = f"{WORKSPACE}/source/{job.project}".rstrip("/.") or WORKSPACE
        container = self.client.containers.create(
            image.id,
            command=list(job.args),
            working_dir=workdir,
            environment={**job.env, **job.file_env(WORKSPACE)},
            network_mode="host" if job.network else "none",
            volumes={str(job.workspace): {"bind": WORKSPACE, "mode": "rw"}},
            labels={"dev.ajour.build": "true"},
            **extra,
        )
        try:
            container.start()
            pump = threading.Thread(target=_pump, args=(container, log), daemon=True)
            pump.start()
            try:
                status = _wait(container, job)
            except requests.exceptions.ReadTimeout:
                _kill(container)
                raise BuildError(f"build timed out after {job.timeout}s", log.tail()) from None
            except BuildCancelled as exc:
                _kill(container)
                raise BuildCancelled(str(exc), log.tail()) from None
            except KeyboardInterrupt:
                _kill(container)
                raise BuildCancelled("build cancelled (Ctrl-C)", log.tail()) from None
            pump.join(10)
            return int(status.get("StatusCode", 1))
        finally:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass


def _wait(container: Any, job: BuildJob) -> dict[str, Any]:
    """Wait in short slices so a cancel request is seen within a second."""
    deadline = time.monotonic() + job.timeout
    while True:
        if job.cancel.is_set():
            raise BuildCancelled("build cancelled by request")
        left = deadline - time.monotonic()
        if left <= 0:
            raise requests.exceptions.ReadTimeout()
        try:
            status: dict[str, Any] = container.wait(timeout=max(1, min(1.0, left)))
            return status
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if "timed out" not in str(exc).lower() and isinstance(
                exc, requests.exceptions.ConnectionError
            ):
                raise
            continue


def _pump(container: Any, log: BuildLog) -> None:
    try:
        for chunk in container.logs(stream=True, follow=True):
            log.write(chunk)
    except (docker.errors.APIError, requests.exceptions.RequestException):
        log.note("log stream ended early")


def _kill(container: Any) -> None:
    try:
        container.kill()
    except docker.errors.APIError:
        pass
