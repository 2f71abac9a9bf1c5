"""Values, vectors and an independent CBOR writer for the embedded-update wire codec tests."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from delivery.protocol import (
    Command,
    ProtocolError,
    Status,
    Swap,
    Sync,
    UpdateStatus,
    Wait,
    Write,
    WritePatch,
    decode_command,
    decode_status,
    encode_command,
    encode_status,
)

# Vendored from the reference material (tests/data/README.md); tests/test_vendored compares them.
VECTORS = Path(__file__).resolve().parent / "data" / "vectors" / "embedded-update.tsv"

# The values named in the TSV's header comment.
VALUES: dict[str, Status | Command] = {
    "status_first": Status(version=b"0.1.0", mtu=512, correlation_id=None, update=None),
    "status_update": Status(
        version=b"0.1.0",
        mtu=512,
        correlation_id=None,
        update=UpdateStatus(version=b"0.1.1", offset=1024),
    ),
    "wait": Wait(correlation_id=7, poll=300),
    "sync": Sync(version=b"0.1.0", correlation_id=None, poll=None),
    "write_small": Write(version=b"0.1.1", correlation_id=None, offset=0, data=b"hello"),
    "swap": Swap(version=b"0.1.1", correlation_id=None, checksum=bytes(range(32))),
}
FORMS = ("packed", "named")
VARIANTS = (Wait, Sync, Write, Swap, WritePatch)
U32_MAX = 2**32 - 1


@cache
def vectors() -> dict[tuple[str, str], bytes]:
    assert VECTORS.is_file(), f"vendored test vectors missing: {VECTORS}"
    rows: dict[tuple[str, str], bytes] = {}
    for line in VECTORS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, form, hexdata = line.split("\t")
        assert (name, form) not in rows, f"duplicate vector {name}/{form}"
        rows[name, form] = bytes.fromhex(hexdata)
    return rows


def encode(value: Status | Command, named: bool = False) -> bytes:
    if isinstance(value, Status):
        return encode_status(value, named=named)
    return encode_command(value, named=named)


def decode(kind: Status | Command, data: bytes) -> Status | Command:
    return decode_status(data) if isinstance(kind, Status) else decode_command(data)


# --- An independent, test-only CBOR writer, for building inputs by hand. ----------------------


class Raw(bytes):
    """Bytes spliced into the output as they are."""


class Pairs(list[tuple[Any, Any]]):
    """A map written entry by entry (so it may hold duplicate keys)."""


def head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(n)


def cbor(x: Any) -> bytes:
    if isinstance(x, Raw):
        return bytes(x)
    if x is None:
        return b"\xf6"
    if isinstance(x, bool):
        return b"\xf5" if x else b"\xf4"
    if isinstance(x, int):
        return head(0, x) if x >= 0 else head(1, -1 - x)
    if isinstance(x, bytes):
        return head(2, len(x)) + x
    if isinstance(x, str):
        return head(3, len(x.encode())) + x.encode()
    if isinstance(x, list | tuple) and not isinstance(x, Pairs):
        return head(4, len(x)) + b"".join(cbor(i) for i in x)
    items = list(x.items()) if isinstance(x, dict) else list(x)
    return head(5, len(items)) + b"".join(cbor(k) + cbor(v) for k, v in items)


def tree(value: Any, named: bool) -> Any:
    """A dataclass as the map serde_cbor writes: field index or name -> value, all fields
    (but Ajour's extension ``Status.patch`` only when it is set)."""
    if not dataclasses.is_dataclass(value):
        return value
    body = {
        (f.name if named else i): tree(getattr(value, f.name), named)
        for i, f in enumerate(dataclasses.fields(value))
        if not (isinstance(value, Status) and f.name == "patch" and value.patch is None)
    }
    if isinstance(value, VARIANTS):
        return {type(value).__name__ if named else VARIANTS.index(type(value)): body}
    return body


def status_map(**fields: Any) -> bytes:
    """A packed status map with the given fields (by name), in the given order."""
    index = {"version": 0, "mtu": 1, "correlation_id": 2, "update": 3, "patch": 4}
    return cbor({index[k]: v for k, v in fields.items()})


def status_error(data: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_status(data)
    return str(info.value)


def command_error(data: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_command(data)
    return str(info.value)


u32 = st.integers(min_value=0, max_value=U32_MAX)
opt_u32 = st.none() | u32
blob = st.binary(max_size=1024)
update_statuses = st.builds(UpdateStatus, version=blob, offset=u32)
statuses = st.builds(
    Status,
    version=blob,
    mtu=opt_u32,
    correlation_id=opt_u32,
    update=st.none() | update_statuses,
    patch=opt_u32,
)
commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Wait, correlation_id=opt_u32, poll=opt_u32),
    st.builds(Sync, version=blob, correlation_id=opt_u32, poll=opt_u32),
    st.builds(Write, version=blob, correlation_id=opt_u32, offset=u32, data=blob),
    st.builds(Swap, version=blob, correlation_id=opt_u32, checksum=blob),
    st.builds(WritePatch, version=blob, correlation_id=opt_u32, offset=u32, data=blob),
)
