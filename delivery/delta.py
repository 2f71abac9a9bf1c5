"""A streaming applier for detools *sequential* patches (compression ``none`` or ``crle``).

What a device that advertises patch support runs (docs/delivery.md, "Delta updates"), in
Python for the simulated device and the tests. It is fed the patch chunk by chunk, as the
``WritePatch`` commands bring it; it reads the old image (the running firmware) through a
callback, at positions the patch gives, and writes the new image strictly in order through
another. Its state is a few integers: memory stays bounded whatever the patch's size.

The format, as detools 0.53 writes it (``create_patch(..., patch_type="sequential",
compression="crle")``):

- one header byte ``0b0TTTCCCC``: patch type ``TTT`` = 0 (sequential), compression ``CCCC``
  = 0 (none) or 2 (crle);
- the new image's size, a detools *size*: the first byte holds a continuation bit (0x80),
  a sign bit (0x40) and the low 6 value bits, each further byte a continuation bit and the
  next 7 bits;
- the rest is compressed (``none``: as is). CRLE is a list of segments: a kind byte, 0
  (scattered: a length, then that many literal bytes) or 1 (repeated: a count, then one
  byte that many times), the length or count as 7-bit groups, lowest first, with 0x80 as
  the continuation bit;
- decompressed: a data-format size (always 0 here: detools' ``--data-format`` patches are
  refused), then records until the new image is complete: the diff size, that many diff
  bytes (new byte = diff byte + old byte, modulo 256, the old byte read at the old
  position, which advances), the extra size, that many bytes copied as they are, and an
  adjustment (signed) added to the old position. The patch ends with the last record.

Anything else is a :class:`PatchError` naming the patch byte where it went wrong. The work
for any input is bounded by its size plus the new image's: a record must add to the new
image unless it is one of at most ``new size + 2`` records, and a repeated CRLE segment is
handed on in slices, so a garbled count is refused after a bounded amount of work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from delivery.errors import DeliveryError

__all__ = ["PatchApplier", "PatchError", "apply_patch"]

SEQUENTIAL: Final = 0
COMPRESSION_NONE: Final = 0
COMPRESSION_CRLE: Final = 2
MAX_SIZE_BYTES: Final = 10
"""A detools size or CRLE length longer than this many bytes is refused (over 64 bits)."""
SLICE: Final = 4096
"""A repeated CRLE run goes to the record parser in slices of at most this many bytes."""
U32_MAX: Final = 0xFFFF_FFFF

# the record parser's states
_DF_SIZE, _DIFF_SIZE, _DIFF, _EXTRA_SIZE, _EXTRA, _ADJUST, _DONE = range(7)
_SIZE_NAMES: Final = {
    _DF_SIZE: "data format size",
    _DIFF_SIZE: "diff size",
    _EXTRA_SIZE: "extra size",
    _ADJUST: "adjustment",
}
# the CRLE decoder's states
_KIND, _LENGTH, _SCATTERED, _REPEATED = range(4)

OldImage = Callable[[int, int], bytes]
"""Reads ``size`` bytes of the old image at ``offset`` (the patch says where)."""


class PatchError(DeliveryError):
    """A patch that is not a detools sequential patch this applier can apply, or that does
    not fit the old image it is applied to."""


def _add(diff: bytes, old: bytes) -> bytes:
    """Byte-wise ``(diff + old) % 256``: eight bytes at a time with no carry between them."""
    n = len(diff)
    x = int.from_bytes(diff, "little")
    y = int.from_bytes(old, "little")
    high = int.from_bytes(b"\x80" * n, "little")
    low = high - (high >> 7)
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "little")


class PatchApplier:
    """Apply one detools sequential patch, fed in chunks (:meth:`feed`), then :meth:`finish`.

    ``old`` is the old image (bytes-like) or a function reading it; ``old_size`` its size
    when ``old`` is a function. ``write`` receives the new image in order. ``max_size``
    bounds the new image (a device passes its slot size): a patch announcing more is
    refused at its header.
    """

    def __init__(
        self,
        old: bytes | bytearray | memoryview | OldImage,
        write: Callable[[bytes], None],
        old_size: int | None = None,
        max_size: int = U32_MAX,
    ) -> None:
        if callable(old):
            if old_size is None:
                raise PatchError("give old_size when the old image is read through a function")
            self._read: OldImage = old
            self.old_size = old_size
        else:
            view = memoryview(old).cast("B")
            self._read = lambda offset, size: bytes(view[offset : offset + size])
            self.old_size = len(view)
        self._write = write
        self.max_size = max_size
        self.consumed = 0  # patch bytes taken so far
        self.written = 0  # new image bytes written so far
        self.new_size: int | None = None
        self._compression = -1
        # detools size being read: value, shift, bytes, and whether it is signed
        self._value = self._shift = self._count = 0
        self._negative = False
        # the record parser
        self._state = _DF_SIZE
        self._left = 0  # bytes left in the current diff or extra part
        self._old_pos = 0
        self._records = 0
        # the CRLE decoder
        self._crle = _KIND
        self._crle_kind = 0
        self._crle_value = self._crle_shift = self._crle_count = 0
        self._crle_left = 0
        self._failed: PatchError | None = None

    # -- public --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The whole new image is written and the patch ended."""
        return self.new_size is not None and self._state == _DONE and self._crle == _KIND

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Take the next ``chunk`` of the patch; writes whatever new image bytes it yields.
        After a PatchError every call raises it again: the applier's state is spent."""
        if self._failed is not None:
            raise self._failed
        try:
            self._feed(bytes(chunk))
        except PatchError as exc:
            self._failed = exc
            raise

    def _feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            if self.new_size is None:
                pos = self._header(data, pos)
            elif self._state == _DONE and self._crle == _KIND:
                raise PatchError(
                    f"patch byte {self.consumed}: {len(data) - pos} byte(s) after the end of"
                    " the patch (the new image is complete)"
                )
            elif self._compression == COMPRESSION_NONE:
                pos = self._records_in(data, pos, len(data), raw=True)
            else:
                pos = self._crle_in(data, pos)

    def finish(self) -> int:
        """Check that the patch ended where the new image is complete; its size."""
        if self._failed is not None:
            raise self._failed
        if not self.done:
            if self.new_size is None:
                what = "its header"
            elif self._state in _SIZE_NAMES:
                what = f"the {_SIZE_NAMES[self._state]}"
            elif self._state in (_DIFF, _EXTRA):
                part = "diff" if self._state == _DIFF else "extra"
                what = f"{self._left} more {part} byte(s)"
            else:
                what = "the rest of a CRLE segment"
            raise PatchError(
                f"the patch ends after {self.consumed} bytes, but it needs {what}"
                f" ({self.written} of {self.new_size or 0} new image bytes written):"
                " it is truncated"
            )
        assert self.new_size is not None
        return self.new_size

    # -- header --------------------------------------------------------------------------
    def _header(self, data: bytes, pos: int) -> int:
        if self._compression < 0:
            byte = data[pos]
            kind, compression = byte >> 4 & 0x7, byte & 0xF
            if byte & 0x80 or kind != SEQUENTIAL:
                raise PatchError(
                    f"patch byte 0: expected a detools sequential patch header (0x00 or 0x02),"
                    f" got 0x{byte:02x} (patch type {kind}); create it with"
                    " detools.create_patch(..., patch_type='sequential')"
                )
            if compression not in (COMPRESSION_NONE, COMPRESSION_CRLE):
                raise PatchError(
                    f"patch byte 0: compression {compression} is not supported; expected 0"
                    " (none) or 2 (crle)"
                )
            self._compression = compression
            self.consumed += 1
            return pos + 1
        before = pos
        size, pos = self._size(data, pos, len(data), "new image size")
        self.consumed += pos - before
        if size is None:
            return pos
        if size < 0 or size > self.max_size:
            raise PatchError(
                f"patch byte {self.consumed}: the new image size is {size}; expected 0 to"
                f" {self.max_size} bytes"
            )
        self.new_size = size
        if size == 0:
            self._state = _DONE
        return pos

    def _size(self, data: bytes, pos: int, end: int, what: str) -> tuple[int | None, int]:
        """Continue reading a detools size from ``data[pos:end]``: (value or None, new pos)."""
        while pos < end:
            byte = data[pos]
            pos += 1
            if self._count == 0:
                self._value = byte & 0x3F
                self._shift = 6
                self._negative = bool(byte & 0x40)
            else:
                self._value |= (byte & 0x7F) << self._shift
                self._shift += 7
            self._count += 1
            if not byte & 0x80:
                value = -self._value if self._negative else self._value
                self._value = self._shift = self._count = 0
                return value, pos
            if self._count >= MAX_SIZE_BYTES:
                raise PatchError(
                    f"patch byte {self.consumed}: the {what} runs over {MAX_SIZE_BYTES} bytes"
                    " (a detools size of more than 64 bits)"
                )
        return None, pos

    # -- records -------------------------------------------------------------------------
    def _records_in(self, data: bytes, pos: int, end: int, raw: bool) -> int:
        """Parse decompressed bytes ``data[pos:end]``; the position after them. ``raw``: they
        are patch bytes as they are (counted in ``consumed``), not a repeated CRLE run."""
        while pos < end:
            state = self._state
            if state == _DIFF or state == _EXTRA:
                n = min(self._left, end - pos)
                piece = data[pos : pos + n]
                if state == _DIFF:
                    piece = _add(piece, self._old(n))
                if raw:
                    self.consumed += n
                self._write(piece)
                self.written += n
                self._left -= n
                pos += n
                if not self._left:
                    self._state = _EXTRA_SIZE if state == _DIFF else _ADJUST
                continue
            if state == _DONE:
                raise PatchError(
                    f"patch byte {self.consumed}: {end - pos} byte(s) after the end of the"
                    " patch (the new image is complete)"
                )
            value, after = self._size(data, pos, end, _SIZE_NAMES[state])
            if raw:
                self.consumed += after - pos
            pos = after
            if value is not None:
                self._record(state, value)
        return pos

    def _record(self, state: int, value: int) -> None:
        assert self.new_size is not None
        where = f"patch byte {self.consumed}"
        if state == _DF_SIZE:
            if value != 0:
                raise PatchError(
                    f"{where}: the patch has a data format part ({value} bytes); patches made"
                    " with detools' --data-format are not supported"
                )
            self._state = _DIFF_SIZE
        elif state == _DIFF_SIZE or state == _EXTRA_SIZE:
            part = "diff" if state == _DIFF_SIZE else "extra"
            room = self.new_size - self.written
            if not 0 <= value <= room:
                raise PatchError(
                    f"{where}: {part} size {value} does not fit the new image ({room} of"
                    f" {self.new_size} bytes left)"
                )
            if state == _DIFF_SIZE:
                self._records += 1
                if self._records > self.new_size + 2:
                    raise PatchError(
                        f"{where}: over {self.new_size + 2} records for a {self.new_size}-byte"
                        " image: the patch is garbled"
                    )
            self._left = value
            if value:
                self._state = _DIFF if state == _DIFF_SIZE else _EXTRA
            else:
                self._state = _EXTRA_SIZE if state == _DIFF_SIZE else _ADJUST
        else:  # the adjustment
            if abs(value) > U32_MAX:
                raise PatchError(f"{where}: adjustment {value} is larger than any image")
            self._old_pos += value
            self._state = _DONE if self.written == self.new_size else _DIFF_SIZE

    def _old(self, n: int) -> bytes:
        start = self._old_pos
        if start < 0 or start + n > self.old_size:
            raise PatchError(
                f"patch byte {self.consumed}: the patch reads old image bytes {start} to"
                f" {start + n}, but the old image has {self.old_size} bytes: it was made"
                " from another image"
            )
        got = self._read(start, n)
        if len(got) != n:
            raise PatchError(f"reading {n} old image bytes at {start} gave {len(got)} bytes")
        self._old_pos = start + n
        return got

    # -- CRLE ----------------------------------------------------------------------------
    def _crle_in(self, data: bytes, pos: int) -> int:
        """Decode CRLE from ``data[pos:]`` into the record parser; the position after."""
        end = len(data)
        while pos < end:
            state = self._crle
            if state == _SCATTERED:
                n = min(self._crle_left, end - pos)
                pos = self._records_in(data, pos, pos + n, raw=True)
                self._crle_left -= n
                if not self._crle_left:
                    self._crle = _KIND
            elif state == _REPEATED:
                run = data[pos : pos + 1]
                pos += 1
                self.consumed += 1
                left = self._crle_left
                while left:
                    n = min(left, SLICE)
                    self._records_in(run * n, 0, n, raw=False)
                    left -= n
                self._crle = _KIND
            elif state == _KIND:
                if self._state == _DONE:
                    raise PatchError(
                        f"patch byte {self.consumed}: {end - pos} byte(s) after the end of the"
                        " patch (the new image is complete)"
                    )
                kind = data[pos]
                if kind > 1:
                    raise PatchError(
                        f"patch byte {self.consumed}: expected a CRLE segment kind, 0"
                        f" (scattered) or 1 (repeated), got {kind}"
                    )
                self._crle_kind = kind
                self._crle = _LENGTH
                pos += 1
                self.consumed += 1
            else:
                pos = self._crle_length(data, pos)
        return pos

    def _crle_length(self, data: bytes, pos: int) -> int:
        byte = data[pos]
        self.consumed += 1
        self._crle_value |= (byte & 0x7F) << self._crle_shift
        self._crle_shift += 7
        self._crle_count += 1
        if byte & 0x80:
            if self._crle_count >= MAX_SIZE_BYTES:
                raise PatchError(
                    f"patch byte {self.consumed}: a CRLE length runs over {MAX_SIZE_BYTES} bytes"
                )
            return pos + 1
        value = self._crle_value
        self._crle_value = self._crle_shift = self._crle_count = 0
        self._crle_left = value
        if self._crle_kind == 0:
            self._crle = _SCATTERED if value else _KIND
        else:
            self._crle = _REPEATED
        return pos + 1


def apply_patch(old: bytes, patch: bytes, max_size: int = U32_MAX) -> bytes:
    """The new image: ``patch`` applied to ``old`` in one go (tests, tools)."""
    out: list[bytes] = []
    applier = PatchApplier(old, out.append, max_size=max_size)
    applier.feed(patch)
    applier.finish()
    return b"".join(out)
