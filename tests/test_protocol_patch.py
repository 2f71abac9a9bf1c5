"""Ajour's protocol extension for delta updates: ``Status.patch`` (key 4) and ``WritePatch``
(variant 4), with the exact bytes docs/delivery.md shows; without them every message keeps
the bytes serde_cbor wrote (tests/test_protocol_vectors.py checks the vendored vectors)."""

from __future__ import annotations

import pytest

from delivery.protocol import (
    PATCH_DETOOLS,
    ProtocolError,
    Status,
    UpdateStatus,
    WritePatch,
    decode_command,
    decode_status,
    encode_command,
    encode_status,
)
from tests.protocol_cases import VALUES, vectors

ADVERTISING = Status(b"1.0.0", 256, None, None, patch=PATCH_DETOOLS)
ADVERTISING_PACKED = bytes.fromhex("a5 00 45 312e302e30 01 19 0100 02 f6 03 f6 04 01")
WRITE_PATCH = WritePatch(b"1.1.0", None, 0, bytes.fromhex("0290020003"))
WRITE_PATCH_PACKED = bytes.fromhex("a1 04 a4 00 45 312e312e30 01 f6 02 00 03 45 0290020003")


def test_a_status_advertising_patches_has_the_documented_bytes() -> None:
    assert encode_status(ADVERTISING) == ADVERTISING_PACKED
    assert decode_status(ADVERTISING_PACKED) == ADVERTISING


def test_write_patch_has_the_documented_bytes() -> None:
    assert encode_command(WRITE_PATCH) == WRITE_PATCH_PACKED
    assert decode_command(WRITE_PATCH_PACKED) == WRITE_PATCH


def test_named_form() -> None:
    named = encode_status(ADVERTISING, named=True)
    assert named.startswith(b"\xa5") and named.endswith(b"\x65patch\x01")
    assert decode_status(named) == ADVERTISING
    cmd = encode_command(WRITE_PATCH, named=True)
    assert cmd.startswith(b"\xa1\x6aWritePatch\xa4")
    assert decode_command(cmd) == WRITE_PATCH


def test_statuses_without_the_field_keep_their_bytes() -> None:
    for name in ("status_first", "status_update"):
        status = VALUES[name]
        assert isinstance(status, Status) and status.patch is None
        assert encode_status(status) == vectors()[name, "packed"]
        assert decode_status(vectors()[name, "packed"]).patch is None


def test_patch_with_an_update_in_progress() -> None:
    status = Status(b"1.0.0", 256, None, UpdateStatus(b"1.1.0", 16), patch=1)
    data = encode_status(status)
    assert data.endswith(bytes.fromhex("03 a2 00 45 312e312e30 01 10 04 01"))
    assert decode_status(data) == status


def test_an_explicit_null_patch_is_no_patch() -> None:
    assert decode_status(bytes.fromhex("a2 00 41 31 04 f6")) == Status(b"1")


def test_bad_patch_values_are_precise_errors() -> None:
    with pytest.raises(ProtocolError, match="status field 'patch': expected an unsigned 32-bit"):
        decode_status(bytes.fromhex("a2 00 41 31 04 41 01"))
    with pytest.raises(ProtocolError, match="status field 'patch': expected an unsigned 32-bit"):
        encode_status(Status(b"1", patch=-1))
    with pytest.raises(ProtocolError, match="command WritePatch field 'data' is missing"):
        decode_command(bytes.fromhex("a1 04 a2 00 41 31 02 00"))
    with pytest.raises(ProtocolError, match="command WritePatch field 'offset'"):
        encode_command(WritePatch(b"1", None, -1, b""))
