"""What one build run needs, and its log."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

TAIL_LINES = 20


@dataclass(frozen=True)
class BuildJob:
    """One invocation of a builder entrypoint (contract 3 in docs/architecture.md)."""

    image: str
    workspace: Path  # holds source/<project>; mounted at /workspace in a container
    project: str
    args: tuple[str, ...]
    env: dict[str, str]
    network: bool = False
    timeout: int = 3600
    entrypoint: Path | None = None  # host mode only
    # set by the service to stop this build; engines check it while they wait
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)

    @property
    def workdir(self) -> Path:
        return (self.workspace / "source" / self.project).resolve()


class BuildLog:
    """Appends build output to a file, keeps the last lines, and reports each line."""

    def __init__(self, path: Path, on_line: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._file: BinaryIO = path.open("ab")
        self._tail: deque[str] = deque(maxlen=200)
        self._partial = b""
        self._lock = threading.Lock()
        self._on_line = on_line

    def write(self, data: bytes) -> None:
        with self._lock:
            self._file.write(data)
            self._file.flush()
            *lines, self._partial = (self._partial + data).split(b"\n")
            for raw in lines:
                self._line(raw)

    def note(self, text: str) -> None:
        """A line from Ajour itself (not the builder)."""
        self.write(f"[ajour] {text}\n".encode())

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        self._tail.append(text)
        if self._on_line is not None:
            self._on_line(text)

    def tail(self, count: int = TAIL_LINES) -> list[str]:
        with self._lock:
            lines = list(self._tail)
            if self._partial:
                lines.append(self._partial.decode("utf-8", errors="replace"))
        builder_lines = [line for line in lines if not line.startswith("[ajour] ")]
        return (builder_lines or lines)[-count:]

    def close(self) -> None:
        with self._lock:
            if self._partial:
                self._line(self._partial)
                self._partial = b""
            self._file.close()


class Engine(Protocol):
    """Runs a builder: in a container (podman/docker) or on the host."""

    name: str

    def image_id(self, job: BuildJob) -> str:
        """A content identity of the builder (part of the cache key); raise if missing."""

    def run(self, job: BuildJob, log: BuildLog) -> int:
        """Run the job to completion; return the exit code. Raise BuildCancelled on Ctrl-C."""


@dataclass
class Progress:
    """Callbacks the runner reports to (the CLI renders them with rich)."""

    on_step: Callable[[str], None] = field(default=lambda step: None)
    on_line: Callable[[str], None] = field(default=lambda line: None)
