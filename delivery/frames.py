"""The serial framing of the C device (``device/boot/app/device.c``, ``device/host/ajour_host.c``):
each message is a 4-byte big-endian length, then that many bytes of CBOR (a status from the
device, a command to it). Nothing else travels on the line: the firmware's console is
semihosting, not the UART.

The framing has no marker or checksum, so :class:`FrameReader` resynchronises by time: a
device sends one status and then waits for its reply, so after a length that cannot be a
status (0, or over ``max_frame``) everything is dropped until the line has been quiet for
``gap`` seconds, and the next byte starts a frame. A frame left unfinished for longer than
``frame_timeout`` (a device reset mid-frame) is dropped when the next bytes come.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import IO, Final

HEADER: Final = 4
MAX_FRAME: Final = 4096  # the worker refuses larger statuses (HTTP 413); devices send < 100 B


def encode_frame(payload: bytes) -> bytes:
    """``payload`` with its length in front."""
    return struct.pack(">I", len(payload)) + payload


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    """Write one frame to a blocking stream (a pipe) and flush it."""
    stream.write(encode_frame(payload))
    stream.flush()


def read_frame(stream: IO[bytes], max_frame: int = 2**32 - 1) -> bytes | None:
    """The next frame of a blocking stream (a pipe, which loses no bytes), or None at its
    end; a frame cut short or over ``max_frame`` is a ValueError."""
    head = stream.read(HEADER)
    if len(head) < HEADER:
        return None
    (size,) = struct.unpack(">I", head)
    if size > max_frame:
        raise ValueError(f"a frame of {size} bytes, over the limit of {max_frame}")
    payload = stream.read(size)
    if len(payload) != size:
        raise ValueError(f"a frame of {size} bytes ended after {len(payload)}")
    return payload


@dataclass
class FrameCounts:
    frames: int = 0
    bytes_in: int = 0  # every byte read, frames and garbage
    oversized: int = 0  # lengths of 0 or over max_frame: resynchronised
    truncated: int = 0  # frames that stopped before their end
    skipped_bytes: int = 0  # bytes dropped while resynchronising


class FrameReader:
    """Splits a byte stream into frames (feed it what the line gives, with the time)."""

    def __init__(
        self, max_frame: int = MAX_FRAME, gap: float = 0.1, frame_timeout: float = 1.0
    ) -> None:
        if not 0 < max_frame < 2**32:
            raise ValueError(f"max_frame must be 1..2^32-1, got {max_frame}")
        self.max_frame, self.gap, self.frame_timeout = max_frame, gap, frame_timeout
        self.counts = FrameCounts()
        self._buf = bytearray()
        self._discarding = False
        self._last: float | None = None  # when the last byte came

    def feed(self, data: bytes, now: float) -> list[bytes]:
        """The frames ``data`` completes, in order."""
        quiet = math.inf if self._last is None else now - self._last
        self._last = now
        self.counts.bytes_in += len(data)
        if self._discarding:
            if quiet < self.gap:
                self.counts.skipped_bytes += len(data)
                return []
            self._discarding = False
        if self._buf and quiet > self.frame_timeout:
            self.counts.truncated += 1
            self.counts.skipped_bytes += len(self._buf)
            self._buf.clear()
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= HEADER:
            (size,) = struct.unpack_from(">I", self._buf)
            if size == 0 or size > self.max_frame:
                self.counts.oversized += 1
                self.counts.skipped_bytes += len(self._buf)
                self._buf.clear()
                self._discarding = True
                break
            if len(self._buf) < HEADER + size:
                break
            frames.append(bytes(self._buf[HEADER : HEADER + size]))
            del self._buf[: HEADER + size]
        self.counts.frames += len(frames)
        return frames

    def reset(self) -> None:
        """Forget a partial frame (the line was closed: a new connection starts clean)."""
        if self._buf:
            self.counts.truncated += 1
            self.counts.skipped_bytes += len(self._buf)
        self._buf.clear()
        self._discarding = False
        self._last = None
