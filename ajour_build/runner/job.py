"""What one build run needs, and its log."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

TAIL_LINES = 20
LINE_BYTES = 64 * 1024  # per log line; the rest of a longer line is dropped
TOTAL_BYTES = 50 * 1024 * 1024  # builder output per build in build.log
SIGNING_KEY_VAR = "AJOUR_IMAGE_KEY_FILE"


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
    # a file in the workspace the build may read (a signing key), relative to the workspace
    signing_key: str | None = None
    # set by the service to stop this build; engines check it while they wait
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)

    @property
    def workdir(self) -> Path:
        return (self.workspace / "source" / self.project).resolve()

    def file_env(self, root: str) -> dict[str, str]:
        """``AJOUR_IMAGE_KEY_FILE``, absolute, where the builder sees the workspace (``root``)."""
        return {SIGNING_KEY_VAR: f"{root}/{self.signing_key}"} if self.signing_key else {}


@dataclass(frozen=True)
class LogLimits:
    """Bounds of one build's log: bytes per line, and builder output in ``build.log``."""

    line_bytes: int = LINE_BYTES
    total_bytes: int = TOTAL_BYTES


class BuildLog:
    """Appends build output to a file, keeps the last lines, and reports each line.

    Linear in the output: each chunk is scanned once for line ends, and only the
    unfinished line is kept, at most ``limits.line_bytes`` of it; the rest of a longer line
    is dropped and the line ends with a marker. Once ``limits.total_bytes`` of builder
    output are in the file, the rest is dropped after one note, which is also reported as
    a line (so it reaches the records); later builder lines are not reported. Ajour's own
    notes are always kept.
    """

    def __init__(
        self,
        path: Path,
        on_line: Callable[[str], None] | None = None,
        limits: LogLimits | None = None,
    ) -> None:
        self.path = path
        self.limits = limits or LogLimits()
        self._file: BinaryIO = path.open("ab")
        self._tail: deque[str] = deque(maxlen=200)
        self._partial = bytearray()  # the unfinished line: at most limits.line_bytes
        self._dropped = 0  # bytes of the unfinished line past limits.line_bytes
        self._written = 0  # bytes of builder output in the file
        self._full = False  # limits.total_bytes reached: builder output is dropped
        self._lock = threading.Lock()
        self._on_line = on_line

    def write(self, data: bytes) -> None:
        with self._lock:
            self._write(data, own=False)
            self._file.flush()

    def note(self, text: str) -> None:
        """A line from Ajour itself (not the builder)."""
        with self._lock:
            self._write(f"[ajour] {text}\n".encode(), own=True)
            self._file.flush()

    def _write(self, data: bytes, own: bool) -> None:
        view = memoryview(data)
        start, size = 0, len(data)
        while start < size:
            end = data.find(b"\n", start)
            stop = size if end < 0 else end
            keep = min(max(self.limits.line_bytes - len(self._partial), 0), stop - start)
            if keep:
                piece = view[start : start + keep]
                self._partial += piece
                self._out(piece, own)
            self._dropped += stop - start - keep
            if end < 0:
                return
            self._end_line(own)
            start = end + 1

    def _out(self, data: bytes | memoryview, own: bool) -> None:
        """Into the file: Ajour's own lines always, builder output up to the total cap."""
        if own:
            self._file.write(data)
            return
        if self._full:
            return
        room = self.limits.total_bytes - self._written
        if len(data) > room:
            self._file.write(data[:room])
            self._written += room
            self._truncated()
            return
        self._file.write(data)
        self._written += len(data)

    def _truncated(self) -> None:
        self._full = True
        note = (
            f"[ajour] log truncated: builder output past {self.limits.total_bytes} bytes is dropped"
        )
        self._file.write(b"\n" + note.encode() + b"\n")
        self._tail.append(note)
        if self._on_line is not None:
            self._on_line(note)

    def _end_line(self, own: bool) -> None:
        text = self._partial.decode("utf-8", errors="replace").rstrip("\r")
        if self._dropped:
            marker = f" [ajour: line truncated, {self._dropped} more bytes dropped]"
            text += marker
            self._out(marker.encode(), own)
        self._out(b"\n", own)
        self._partial.clear()
        self._dropped = 0
        self._tail.append(text)
        if self._on_line is not None and (own or not self._full):
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
            if self._partial or self._dropped:
                self._end_line(own=False)
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
