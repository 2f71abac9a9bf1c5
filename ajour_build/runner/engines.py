"""Pick the engine a local build runs in: the host, a Docker API, or a private podman service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ajour_build.builders import podman
from ajour_build.runner.container import ContainerEngine
from ajour_build.runner.host import HostEngine
from ajour_build.runner.job import Engine
from ajour_build.settings import LocalSettings


@contextmanager
def engine_for(runner: str, settings: LocalSettings) -> Iterator[Engine]:
    if runner == "host":
        yield HostEngine()
        return
    url = settings.container_host or os.environ.get("DOCKER_HOST", "")
    if url:
        yield ContainerEngine(url)
        return
    env = podman.environment(settings.state_dir)
    with podman.api_service(settings.state_dir, env) as socket_url:
        yield ContainerEngine(socket_url)
