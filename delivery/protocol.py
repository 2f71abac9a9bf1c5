"""The embedded-update wire protocol: Status (device → server) and Command (server → device).

Byte-compatible with Rust ``serde_cbor`` 0.11 as used by drogue's embedded-update crate:

- *packed* form (``ser::to_vec_packed``, what devices send and what we emit): struct fields and
  enum variants are map keys holding their index;
- *named* form (``ser::to_vec``, what the drgdfu gateway sends): the keys are the Rust field
  and variant names as text.

Every field is written, ``None`` as CBOR null. An enum value is a one-entry map
``{variant: struct}``. Integers use the shortest CBOR encoding.

The decoder is a small schema-directed CBOR reader, not a general one: it reads exactly the
shapes above and rejects everything else (unknown or duplicate keys, wrong types, tags,
floats, indefinite lengths, trailing bytes, lengths past the end of the input) with a
:class:`ProtocolError` naming the field. The deepest valid message nests two maps
(``Status.update``, ``Command{variant: struct}``); the reader only descends into a container
where the schema expects one, so it never goes past that depth, let alone ``MAX_DEPTH``, and
hostile nesting costs one byte of inspection. The same key may arrive as its index or its
name (as serde_cbor accepts); the two spellings of a field count as duplicates.

The codec checks only the wire format: u32 ranges and types. Policy (clamping ``mtu``,
offsets past the end) belongs to the decision layer.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeAlias, TypeVar

from delivery.errors import DeliveryError

__all__ = [
    "MAX_DEPTH",
    "MAX_STATUS_BYTES",
    "U32_MAX",
    "Command",
    "ProtocolError",
    "Status",
    "Swap",
    "Sync",
    "UpdateStatus",
    "Wait",
    "Write",
    "decode_command",
    "decode_status",
    "encode_command",
    "encode_status",
]

_log = logging.getLogger("delivery.protocol")

MAX_STATUS_BYTES: Final = 4096
"""A status larger than this is rejected before any decoding."""

MAX_DEPTH: Final = 4
"""Nesting limit promised by the codec (valid messages nest 2 deep; see the module doc)."""

U32_MAX: Final = 0xFFFF_FFFF


class ProtocolError(DeliveryError):
    """A message that is not a valid embedded-update Status or Command."""


@dataclass(frozen=True, slots=True)
class UpdateStatus:
    """A device's partly written update: the version being written and the bytes it has."""

    version: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class Status:
    """What a device reports: its running version, its largest chunk, its progress."""

    version: bytes
    mtu: int | None = None
    correlation_id: int | None = None
    update: UpdateStatus | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do now: ask again in ``poll`` seconds."""

    correlation_id: int | None
    poll: int | None


@dataclass(frozen=True, slots=True)
class Sync:
    """The device runs the target ``version``: in sync."""

    version: bytes
    correlation_id: int | None
    poll: int | None


@dataclass(frozen=True, slots=True)
class Write:
    """Write ``data`` at ``offset`` of the update to ``version``."""

    version: bytes
    correlation_id: int | None
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Swap:
    """All of ``version`` is written: check it against ``checksum`` (SHA-256) and boot it."""

    version: bytes
    correlation_id: int | None
    checksum: bytes


Command: TypeAlias = Wait | Sync | Write | Swap


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------

_HEAD16 = struct.Struct(">BH").pack
_HEAD32 = struct.Struct(">BI").pack
_HEAD64 = struct.Struct(">BQ").pack


def _head(major: int, n: int) -> bytes:
    """The shortest CBOR head for ``major`` with argument ``n``."""
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x1_0000:
        return _HEAD16(mt | 25, n)
    if n <= U32_MAX:
        return _HEAD32(mt | 26, n)
    return _HEAD64(mt | 27, n)


# Precomputed heads: unsigned integers and byte-string lengths below 256.
_UINT: Final = tuple(_head(0, n) for n in range(256))
_BSTR: Final = tuple(_head(2, n) for n in range(256))
_NULL: Final = b"\xf6"


def _text(s: str) -> bytes:
    raw = s.encode()
    return _head(3, len(raw)) + raw


def _enc_u32(value: object, where: str, field: str) -> bytes:
    if type(value) is int and 0 <= value <= U32_MAX:
        if value < 0x100:
            return _UINT[value]
        if value < 0x1_0000:
            return _HEAD16(0x19, value)
        return _HEAD32(0x1A, value)
    raise ProtocolError(
        f"{where} field '{field}': expected an unsigned 32-bit integer, got {value!r}"
    )


def _enc_opt_u32(value: object, where: str, field: str) -> bytes:
    return _NULL if value is None else _enc_u32(value, where, field)


def _bhead(value: bytes) -> bytes:
    n = len(value)
    return _BSTR[n] if n < 0x100 else _head(2, n)


def _keys(*names: str) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """(packed keys, named keys) for a struct's fields, in declaration order."""
    return tuple(_UINT[i] for i in range(len(names))), tuple(_text(n) for n in names)


_STATUS_KEYS: Final = _keys("version", "mtu", "correlation_id", "update")
_UPDATE_KEYS: Final = _keys("version", "offset")


def _variant_prefix(index: int, name: str, nfields: int) -> tuple[bytes, bytes]:
    """``{variant: <map of nfields>`` for packed and named."""
    return (b"\xa1" + _UINT[index] + _head(5, nfields), b"\xa1" + _text(name) + _head(5, nfields))


_WAIT_PREFIX: Final = _variant_prefix(0, "Wait", 2)
_SYNC_PREFIX: Final = _variant_prefix(1, "Sync", 3)
_WRITE_PREFIX: Final = _variant_prefix(2, "Write", 4)
_SWAP_PREFIX: Final = _variant_prefix(3, "Swap", 3)
_WAIT_KEYS: Final = _keys("correlation_id", "poll")
_SYNC_KEYS: Final = _keys("version", "correlation_id", "poll")
_WRITE_KEYS: Final = _keys("version", "correlation_id", "offset", "data")
_SWAP_KEYS: Final = _keys("version", "correlation_id", "checksum")


def encode_status(st: Status, named: bool = False) -> bytes:
    """CBOR for a Status: packed (integer keys) by default, text keys with ``named=True``."""
    k = _STATUS_KEYS[named]
    v = st.version
    u = st.update
    if u is None:
        update = _NULL
    else:
        uk = _UPDATE_KEYS[named]
        uv = u.version
        update = b"".join(
            (b"\xa2", uk[0], _bhead(uv), uv, uk[1], _enc_u32(u.offset, "status", "update.offset"))
        )
    return b"".join(
        (
            b"\xa4",
            k[0],
            _bhead(v),
            v,
            k[1],
            _enc_opt_u32(st.mtu, "status", "mtu"),
            k[2],
            _enc_opt_u32(st.correlation_id, "status", "correlation_id"),
            k[3],
            update,
        )
    )


def _enc_wait(c: Wait, named: bool) -> bytes:
    k = _WAIT_KEYS[named]
    return b"".join(
        (
            _WAIT_PREFIX[named],
            k[0],
            _enc_opt_u32(c.correlation_id, "command Wait", "correlation_id"),
            k[1],
            _enc_opt_u32(c.poll, "command Wait", "poll"),
        )
    )


def _enc_sync(c: Sync, named: bool) -> bytes:
    k = _SYNC_KEYS[named]
    v = c.version
    return b"".join(
        (
            _SYNC_PREFIX[named],
            k[0],
            _bhead(v),
            v,
            k[1],
            _enc_opt_u32(c.correlation_id, "command Sync", "correlation_id"),
            k[2],
            _enc_opt_u32(c.poll, "command Sync", "poll"),
        )
    )


def _enc_write(c: Write, named: bool) -> bytes:
    k = _WRITE_KEYS[named]
    v = c.version
    d = c.data
    return b"".join(
        (
            _WRITE_PREFIX[named],
            k[0],
            _bhead(v),
            v,
            k[1],
            _enc_opt_u32(c.correlation_id, "command Write", "correlation_id"),
            k[2],
            _enc_u32(c.offset, "command Write", "offset"),
            k[3],
            _bhead(d),
            d,
        )
    )


def _enc_swap(c: Swap, named: bool) -> bytes:
    k = _SWAP_KEYS[named]
    v = c.version
    s = c.checksum
    return b"".join(
        (
            _SWAP_PREFIX[named],
            k[0],
            _bhead(v),
            v,
            k[1],
            _enc_opt_u32(c.correlation_id, "command Swap", "correlation_id"),
            k[2],
            _bhead(s),
            s,
        )
    )


_COMMAND_ENCODERS: Final[dict[type, Callable[[Any, bool], bytes]]] = {
    Wait: _enc_wait,
    Sync: _enc_sync,
    Write: _enc_write,
    Swap: _enc_swap,
}


def encode_command(cmd: Command, named: bool = False) -> bytes:
    """CBOR for a Command: packed (variant and field indices) by default, names with ``named``."""
    enc = _COMMAND_ENCODERS.get(type(cmd))
    if enc is None:
        raise ProtocolError(f"command: expected Wait, Sync, Write or Swap, got {cmd!r}")
    return enc(cmd, named)


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------

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
_WRITE: Final = _Schema(
    "command Write",
    Write,
    [
        ("version", _read_version, True),
        ("correlation_id", _read_opt_u32, False),
        ("offset", _read_u32, True),
        ("data", _read_bytes, True),
    ],
)
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
    b"Wait": _WAIT,
    b"Sync": _SYNC,
    b"Write": _WRITE,
    b"Swap": _SWAP,
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
