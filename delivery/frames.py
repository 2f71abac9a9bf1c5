"""The framings of the C device's messages (CBOR statuses from it, commands to it).

**On its UART** (``device/boot/app/device.c``, ``device/src/frame.c``; a real serial line
drops, flips and invents bytes): each frame is ``00``, then the COBS encoding of the payload
followed by its CRC-32 (zlib's, IEEE 802.3) in big-endian order, then ``00``. COBS leaves no
``00`` inside a frame, so ``00`` is the marker: :class:`FrameReader` cuts the stream at every
``00`` and keeps a piece only if it decodes and its CRC matches. Garbage between frames is a
piece of its own (the leading ``00`` closes it), garbage inside a frame spoils that frame
alone, and the next ``00`` resynchronises: no length to trust, no timer. A piece longer than
``max_frame`` is dropped as it comes, so the buffer stays bounded.

**On a pipe** (``device/host/ajour_host.c``, which loses no bytes): a 4-byte big-endian
length, then the payload (:func:`read_frame`, :func:`write_frame`).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import IO, Final

MARKER: Final = 0
CRC_SIZE: Final = 4
MAX_FRAME: Final = 4096  # the worker refuses larger statuses (HTTP 413); devices send < 100 B


def cobs_encode(data: bytes) -> bytes:
    """``data`` without a ``00``: each run of up to 254 non-zero bytes after a code byte,
    its length + 1, which stands for a ``00`` after the run unless it is 255 or the last."""
    out = bytearray()
    i, n = 0, len(data)
    while True:
        run = data.find(b"\x00", i, i + 254)
        end = min(i + 254, n) if run < 0 else run
        out.append(end - i + 1)
        out += data[i:end]
        if end == n:
            return bytes(out)
        i = end + 1 if end - i < 254 else end


def cobs_decode(data: bytes) -> bytes | None:
    """The bytes :func:`cobs_encode` made ``data`` of, or None if it cannot have."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0 or i + code > n:
            return None
        out += data[i + 1 : i + code]
        i += code
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out) if n else None


def encode_frame(payload: bytes) -> bytes:
    """``payload`` as one UART frame: ``00``, COBS(payload, CRC-32 big-endian), ``00``."""
    body = cobs_encode(payload + struct.pack(">I", zlib.crc32(payload)))
    return b"\x00" + body + b"\x00"


def max_encoded(max_frame: int) -> int:
    """The longest COBS piece a payload of ``max_frame`` bytes and its CRC make."""
    size = max_frame + CRC_SIZE
    return size + size // 254 + 1


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    """Write one length-prefixed frame to a blocking stream (a pipe) and flush it."""
    stream.write(struct.pack(">I", len(payload)) + payload)
    stream.flush()


def read_frame(stream: IO[bytes], max_frame: int = 2**32 - 1) -> bytes | None:
    """The next length-prefixed frame of a blocking stream (a pipe, which loses no bytes),
    or None at its end; a frame cut short or over ``max_frame`` is a ValueError."""
    head = stream.read(4)
    if len(head) < 4:
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
    bad_crc: int = 0  # pieces between markers that are no frame: bad COBS, short, CRC wrong
    oversized: int = 0  # pieces longer than any frame of max_frame bytes
    truncated: int = 0  # frames the line closed in the middle of
    skipped_bytes: int = 0  # bytes dropped: bad pieces, oversized, truncated


class FrameReader:
    """Splits a byte stream into UART frames (feed it what the line gives)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        if not 0 < max_frame < 2**31:
            raise ValueError(f"max_frame must be 1..2^31-1, got {max_frame}")
        self.max_frame = max_frame
        self.limit = max_encoded(max_frame)
        self.counts = FrameCounts()
        self._buf = bytearray()
        self._discarding = False  # in a piece over the limit: drop up to the next marker

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads of the frames ``data`` completes, in order."""
        c = self.counts
        c.bytes_in += len(data)
        frames: list[bytes] = []
        start = 0
        while (end := data.find(b"\x00", start)) >= 0:
            self._add(data[start:end])
            if self._discarding:
                self._discarding = False
            elif self._buf:
                payload = self._decode(bytes(self._buf))
                if payload is None:
                    c.bad_crc += 1
                    c.skipped_bytes += len(self._buf)
                else:
                    frames.append(payload)
            self._buf.clear()
            start = end + 1
        self._add(data[start:])
        c.frames += len(frames)
        return frames

    def _add(self, piece: bytes) -> None:
        if self._discarding:
            self.counts.skipped_bytes += len(piece)
        elif len(self._buf) + len(piece) > self.limit:
            self.counts.oversized += 1
            self.counts.skipped_bytes += len(self._buf) + len(piece)
            self._buf.clear()
            self._discarding = True
        else:
            self._buf += piece

    def _decode(self, piece: bytes) -> bytes | None:
        data = cobs_decode(piece)
        if data is None or not CRC_SIZE <= len(data) <= self.max_frame + CRC_SIZE:
            return None
        payload, crc = data[:-CRC_SIZE], data[-CRC_SIZE:]
        return payload if zlib.crc32(payload) == int.from_bytes(crc, "big") else None

    def reset(self) -> None:
        """Forget a partial frame (the line was closed: a new connection starts clean)."""
        if self._buf:
            self.counts.truncated += 1
            self.counts.skipped_bytes += len(self._buf)
        self._buf.clear()
        self._discarding = False
