"""Encoding: :func:`encode_status` and :func:`encode_command`, packed or named.

Writes the form described in :mod:`delivery.protocol.messages`: every field in declaration
order, ``None`` as CBOR null, integers in their shortest encoding. Heads, keys and variant
prefixes are precomputed bytes, so an encode is mostly one ``b"".join``. A value that does not
fit the wire format (an offset that is not a u32, an object that is not a Command) raises
:class:`~delivery.protocol.messages.ProtocolError` naming the field.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

from delivery.protocol.messages import (
    U32_MAX,
    Command,
    ProtocolError,
    Status,
    Swap,
    Sync,
    Wait,
    Write,
    WritePatch,
)

__all__ = ["encode_command", "encode_status"]

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


_STATUS_KEYS: Final = _keys("version", "mtu", "correlation_id", "update", "patch")
_UPDATE_KEYS: Final = _keys("version", "offset")


def _variant_prefix(index: int, name: str, nfields: int) -> tuple[bytes, bytes]:
    """``{variant: <map of nfields>`` for packed and named."""
    return (b"\xa1" + _UINT[index] + _head(5, nfields), b"\xa1" + _text(name) + _head(5, nfields))


_WAIT_PREFIX: Final = _variant_prefix(0, "Wait", 2)
_SYNC_PREFIX: Final = _variant_prefix(1, "Sync", 3)
_WRITE_PREFIX: Final = _variant_prefix(2, "Write", 4)
_SWAP_PREFIX: Final = _variant_prefix(3, "Swap", 3)
_WRITE_PATCH_PREFIX: Final = _variant_prefix(4, "WritePatch", 4)
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
    patch = st.patch
    return b"".join(
        (
            b"\xa4" if patch is None else b"\xa5",
            k[0],
            _bhead(v),
            v,
            k[1],
            _enc_opt_u32(st.mtu, "status", "mtu"),
            k[2],
            _enc_opt_u32(st.correlation_id, "status", "correlation_id"),
            k[3],
            update,
            b"" if patch is None else k[4] + _enc_u32(patch, "status", "patch"),
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


def _enc_write(c: Write | WritePatch, named: bool) -> bytes:
    k = _WRITE_KEYS[named]
    v = c.version
    d = c.data
    where = "command Write" if type(c) is Write else "command WritePatch"
    return b"".join(
        (
            (_WRITE_PREFIX if type(c) is Write else _WRITE_PATCH_PREFIX)[named],
            k[0],
            _bhead(v),
            v,
            k[1],
            _enc_opt_u32(c.correlation_id, where, "correlation_id"),
            k[2],
            _enc_u32(c.offset, where, "offset"),
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
    WritePatch: _enc_write,
}


def encode_command(cmd: Command, named: bool = False) -> bytes:
    """CBOR for a Command: packed (variant and field indices) by default, names with ``named``."""
    enc = _COMMAND_ENCODERS.get(type(cmd))
    if enc is None:
        raise ProtocolError(f"command: expected Wait, Sync, Write, Swap or WritePatch, got {cmd!r}")
    return enc(cmd, named)
