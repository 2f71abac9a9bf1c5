"""Decoding: :func:`decode_status` and :func:`decode_command`, packed or named.

A small schema-directed CBOR reader, not a general one: it reads exactly the shapes described
in :mod:`delivery.protocol.messages` and rejects everything else (unknown or duplicate keys,
wrong types, tags, floats, indefinite lengths, trailing bytes, lengths past the end of the
input) with a :class:`~delivery.protocol.messages.ProtocolError` naming the field. The deepest
valid message nests two maps (``Status.update``, ``Command{variant: struct}``); the reader only
descends into a container where the schema expects one, so it never goes past that depth, let
alone ``MAX_DEPTH``, and hostile nesting costs one byte of inspection. The same key may arrive
as its index or its name (as serde_cbor accepts); the two spellings of a field count as
duplicates.

Warnings (a text ``version`` accepted leniently) go to the ``delivery.protocol`` logger.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any, Final, Generic, TypeAlias, TypeVar

from delivery.protocol.messages import (
    MAX_STATUS_BYTES,
    U32_MAX,
    Command,
    ProtocolError,
    Status,
    Swap,
    Sync,
    UpdateStatus,
    Wait,
    Write,
    WritePatch,
)

__all__ = ["decode_command", "decode_status"]

_log = logging.getLogger("delivery.protocol")

_SIMPLE_NAMES: Final = {20: "false", 21: "true", 22: "null", 23: "undefined", 31: "break"}
_MAJOR_NAMES: Final = (
    "unsigned integer",
    "negative integer",
    "byte string",
    "text",
    "array",
    "map",
    "tag",
    "simple value",
)


_UNPACK: Final = {
    25: struct.Struct(">H").unpack_from,
    26: struct.Struct(">I").unpack_from,
    27: struct.Struct(">Q").unpack_from,
}


def _arg(data: bytes, pos: int, where: str) -> tuple[int, int]:
    """The argument of the head at ``pos`` (length or integer value) and the position after.

    Callers pass only heads with a definite argument (additional info 0-27); indefinite
    lengths and reserved encodings never get here, they fail the callers' type checks.
    """
    info = data[pos] & 0x1F
    if info < 24:
        return info, pos + 1
    if info == 24:
        return data[pos + 1], pos + 2
    end = pos + 1 + (1 << (info - 24))
    if end > len(data):
        raise ProtocolError(f"{where}: truncated input")
    return _UNPACK[info](data, pos + 1)[0], end


def _describe(data: bytes, pos: int) -> str:
    """A short name for the item at ``pos``, for "expected X, got Y" messages."""
    ib = data[pos]
    major, info = ib >> 5, ib & 0x1F
    if major == 7:
        if info in _SIMPLE_NAMES:
            return _SIMPLE_NAMES[info]
        return "float" if 25 <= info <= 27 else "simple value"
    if info == 31:
        return f"indefinite-length {_MAJOR_NAMES[major]}"
    if info > 27:
        return f"malformed {_MAJOR_NAMES[major]}"
    if major <= 1:
        try:
            n, _ = _arg(data, pos, "")
        except ProtocolError:
            return _MAJOR_NAMES[major]
        return f"integer {n if major == 0 else -1 - n}"
    return _MAJOR_NAMES[major]


_T_co = TypeVar("_T_co", covariant=True)

# A field reader: (data, pos, where) -> (value, position after it).
_Reader: TypeAlias = Callable[[bytes, int, str], tuple[Any, int]]


_U32_AT: Final = struct.Struct(">I").unpack_from


def _read_u32(data: bytes, pos: int, where: str) -> tuple[int, int]:
    ib = data[pos]
    if ib < 0x18:
        return ib, pos + 1
    if ib == 0x19:  # 2 and 4 bytes (mtu, offsets) inline
        end = pos + 3
        if end <= len(data):
            return data[pos + 1] << 8 | data[pos + 2], end
    elif ib == 0x1A:
        end = pos + 5
        if end <= len(data):
            return _U32_AT(data, pos + 1)[0], end
    if ib <= 0x1B:
        n, end = _arg(data, pos, where)
        if n <= U32_MAX:
            return n, end
    raise ProtocolError(f"{where}: expected an unsigned 32-bit integer, got {_describe(data, pos)}")


def _read_opt_u32(data: bytes, pos: int, where: str) -> tuple[int | None, int]:
    if data[pos] == 0xF6:
        return None, pos + 1
    return _read_u32(data, pos, where)


def _read_bytes(data: bytes, pos: int, where: str) -> tuple[bytes, int]:
    ib = data[pos]
    if 0x40 <= ib < 0x58:
        start = pos + 1
        end = start + ib - 0x40
    elif 0x58 <= ib <= 0x5B:
        n, start = _arg(data, pos, where)
        end = start + n
    else:
        raise ProtocolError(f"{where}: expected a byte string, got {_describe(data, pos)}")
    if end > len(data):
        raise ProtocolError(f"{where}: byte string runs past the end of the input")
    return data[start:end], end


def _read_version(data: bytes, pos: int, where: str) -> tuple[bytes, int]:
    ib = data[pos]
    if 0x40 <= ib < 0x58:  # the usual short byte string, inline
        end = pos + 1 + ib - 0x40
        if end <= len(data):
            return data[pos + 1 : end], end
    if not 0x60 <= ib <= 0x7B:
        return _read_bytes(data, pos, where)
    # Lenient: a text version is taken as its UTF-8 bytes (serde_bytes accepts it too).
    n, start = _arg(data, pos, where)
    end = start + n
    if end > len(data):
        raise ProtocolError(f"{where}: text runs past the end of the input")
    raw = data[start:end]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{where}: text is not valid UTF-8") from None
    _log.warning("%s: got text instead of a byte string; accepted as its UTF-8 bytes", where)
    return raw, end


class _Schema(Generic[_T_co]):
    """One struct's fields: how to find them by key, read them, and build the dataclass."""

    __slots__ = ("build", "by_key", "context", "defaults", "missing", "required_mask")

    def __init__(
        self,
        context: str,
        build: Callable[..., _T_co],
        fields: list[tuple[str, _Reader, bool]],
        where_prefix: str | None = None,
    ) -> None:
        """``context`` names the struct in errors, ``where_prefix`` + name names a field."""
        self.context = context
        self.build = build
        self.by_key: dict[int | bytes, tuple[int, str, _Reader]] = {}
        self.defaults: list[Any] = [None] * len(fields)
        self.missing: list[tuple[int, str]] = []
        self.required_mask = 0
        prefix = f"{context} field '" if where_prefix is None else where_prefix
        for i, (name, reader, required) in enumerate(fields):
            where = f"{prefix}{name}'"
            self.by_key[i] = self.by_key[name.encode()] = (i, where, reader)
            if required:
                self.required_mask |= 1 << i
                self.missing.append((i, where))


def _read_key(data: bytes, pos: int, where: str) -> tuple[int | bytes, int]:
    """A map key: an integer (packed form) or the raw UTF-8 of a text key (named form)."""
    ib = data[pos]
    if ib < 0x18:
        return ib, pos + 1
    if 0x60 <= ib < 0x78:
        start = pos + 1
        end = start + ib - 0x60
    elif ib <= 0x1B:
        return _arg(data, pos, where)
    elif 0x78 <= ib <= 0x7B:
        n, start = _arg(data, pos, where)
        end = start + n
    else:
        raise ProtocolError(
            f"{where}: map keys must be unsigned integers or text, got {_describe(data, pos)}"
        )
    if end > len(data):
        raise ProtocolError(f"{where}: text runs past the end of the input")
    return data[start:end], end


def _show_key(key: int | bytes) -> str:
    if isinstance(key, int):
        return str(key)
    text = key.decode("utf-8", "replace")
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _read_map_len(data: bytes, pos: int, where: str, what: str) -> tuple[int, int]:
    ib = data[pos]
    if 0xA0 <= ib < 0xB8:
        return ib - 0xA0, pos + 1
    if 0xB8 <= ib <= 0xBB:
        return _arg(data, pos, where)
    raise ProtocolError(f"{where}: expected {what}, got {_describe(data, pos)}")


def _read_struct(data: bytes, pos: int, schema: _Schema[_T_co]) -> tuple[_T_co, int]:
    context = schema.context
    ib = data[pos]
    if 0xA0 <= ib < 0xB8:
        n = ib - 0xA0
        pos += 1
    else:
        n, pos = _read_map_len(data, pos, context, "a map")
    by_key = schema.by_key
    values = schema.defaults.copy()
    seen = 0
    for _ in range(n):
        kb = data[pos]
        if kb < 0x18:  # a packed key, inline
            key: int | bytes = kb
            pos += 1
        else:
            key, pos = _read_key(data, pos, context)
        entry = by_key.get(key)
        if entry is None:
            raise ProtocolError(f"{context}: unknown field {_show_key(key)}")
        index, where, reader = entry
        bit = 1 << index
        if seen & bit:
            raise ProtocolError(f"{where}: duplicate key")
        seen |= bit
        values[index], pos = reader(data, pos, where)
    if seen & schema.required_mask != schema.required_mask:
        for index, where in schema.missing:
            if not seen & (1 << index):
                raise ProtocolError(f"{where} is missing")
    return schema.build(*values), pos


_UPDATE: Final = _Schema(
    "status field 'update'",
    UpdateStatus,
    [("version", _read_version, True), ("offset", _read_u32, True)],
    where_prefix="status field 'update.",
)


def _read_opt_update(data: bytes, pos: int, where: str) -> tuple[UpdateStatus | None, int]:
    if data[pos] == 0xF6:
        return None, pos + 1
    return _read_struct(data, pos, _UPDATE)


_STATUS: Final = _Schema(
    "status",
    Status,
    [
        ("version", _read_version, True),
        ("mtu", _read_opt_u32, False),
        ("correlation_id", _read_opt_u32, False),
        ("update", _read_opt_update, False),
        ("patch", _read_opt_u32, False),
    ],
)

_WAIT: Final = _Schema(
    "command Wait", Wait, [("correlation_id", _read_opt_u32, False), ("poll", _read_opt_u32, False)]
)
_SYNC: Final = _Schema(
    "command Sync",
    Sync,
    [
        ("version", _read_version, True),
        ("correlation_id", _read_opt_u32, False),
        ("poll", _read_opt_u32, False),
    ],
)
_BLOCK_FIELDS: Final[
    list[tuple[str, _Reader, bool]]
] = [  # a block of the image (Write) or of a patch (WritePatch)
    ("version", _read_version, True),
    ("correlation_id", _read_opt_u32, False),
    ("offset", _read_u32, True),
    ("data", _read_bytes, True),
]
_WRITE: Final = _Schema("command Write", Write, _BLOCK_FIELDS)
_WRITE_PATCH: Final = _Schema("command WritePatch", WritePatch, _BLOCK_FIELDS)
_SWAP: Final = _Schema(
    "command Swap",
    Swap,
    [
        ("version", _read_version, True),
        ("correlation_id", _read_opt_u32, False),
        ("checksum", _read_bytes, True),
    ],
)
# Variants by index (packed) and by name (named), in the Rust enum's order.
_VARIANTS: Final[dict[int | bytes, _Schema[Command]]] = {
    0: _WAIT,
    1: _SYNC,
    2: _WRITE,
    3: _SWAP,
    4: _WRITE_PATCH,
    b"Wait": _WAIT,
    b"Sync": _SYNC,
    b"Write": _WRITE,
    b"Swap": _SWAP,
    b"WritePatch": _WRITE_PATCH,
}


def _finish(data: bytes, pos: int, context: str) -> None:
    if pos != len(data):
        raise ProtocolError(f"{context}: {len(data) - pos} trailing byte(s) after the message")


def decode_status(data: bytes | bytearray | memoryview) -> Status:
    """Parse a device's Status, packed or named. Raises ProtocolError on anything else.

    A status over MAX_STATUS_BYTES is rejected before any of it is read. A text ``version``
    is accepted as its UTF-8 bytes, with a warning on the ``delivery.protocol`` logger.
    """
    if type(data) is not bytes:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size > MAX_STATUS_BYTES:
            raise ProtocolError(f"status: {size} bytes is over the {MAX_STATUS_BYTES}-byte limit")
        data = bytes(data)
    elif len(data) > MAX_STATUS_BYTES:
        raise ProtocolError(f"status: {len(data)} bytes is over the {MAX_STATUS_BYTES}-byte limit")
    try:
        status, pos = _read_struct(data, 0, _STATUS)
    except IndexError:
        raise ProtocolError("status: truncated input" if data else "status: empty input") from None
    _finish(data, pos, "status")
    return status


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """Parse a Command (``{variant: struct}``), packed or named. Raises ProtocolError."""
    if type(data) is not bytes:
        data = bytes(data)
    try:
        n, pos = _read_map_len(data, 0, "command", "a map with one entry (the variant)")
        if n != 1:
            raise ProtocolError(
                f"command: expected a map with one entry (the variant), got {n} entries"
            )
        key, pos = _read_key(data, pos, "command")
        schema = _VARIANTS.get(key)
        if schema is None:
            raise ProtocolError(f"command: unknown variant {_show_key(key)}")
        cmd, pos = _read_struct(data, pos, schema)
    except IndexError:
        raise ProtocolError(
            "command: truncated input" if data else "command: empty input"
        ) from None
    _finish(data, pos, "command")
    return cmd
