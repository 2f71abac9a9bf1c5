"""The embedded-update wire codec, strict on bad input: garbled, damaged, oversized and
wrongly typed messages raise only protocol errors."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.protocol import (
    MAX_DEPTH,
    MAX_STATUS_BYTES,
    Command,
    ProtocolError,
    Status,
    UpdateStatus,
    decode_command,
    decode_status,
)
from tests.protocol_cases import (
    Pairs,
    Raw,
    cbor,
    command_error,
    commands,
    decode,
    encode,
    status_error,
    status_map,
    statuses,
    vectors,
)

# --- Bad input ---------------------------------------------------------------------------------


@given(st.binary(max_size=256))
def test_garbled_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for decoder in (decode_status, decode_command):
        try:
            decoder(data)
        except ProtocolError:
            pass


keys = st.sampled_from(
    [0, 1, 2, 3, 4, 24, -1, "version", "mtu", "update", "offset", "data", "Write", "Swap", ""]
)
cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=8)
    | st.text(max_size=8)
    | st.sampled_from([Raw(b"\xf9\x00\x00"), Raw(b"\xc0\x00")]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(keys, cbor_values, max_size=5) | cbor_values)
def test_well_formed_but_wrong_cbor_raises_only_protocol_errors(value: Any) -> None:
    """Near misses: real keys with values of any type, nested anyhow."""
    data = cbor(value)
    for decoder in (decode_status, decode_command):
        try:
            decoder(data)
        except ProtocolError:
            pass


@given(st.one_of(statuses, commands), st.booleans(), st.data())
def test_damaged_messages_raise_only_protocol_errors(
    value: Status | Command, named: bool, draw: st.DataObject
) -> None:
    data = bytearray(encode(value, named=named))
    cut = draw.draw(st.integers(0, len(data) - 1))
    with pytest.raises(ProtocolError):  # every strict prefix is incomplete
        decode(value, bytes(data[:cut]))
    data[cut] = draw.draw(st.integers(0, 255))
    try:
        decode(value, bytes(data))
    except ProtocolError:
        pass


def test_json_instead_of_cbor_is_rejected() -> None:
    assert status_error(b'{"version": "0.1.0", "mtu": 512}') == ("status: expected a map, got text")
    assert command_error(b'{"Wait": {}}').startswith("command: expected a map with one entry")


def test_empty_and_truncated_input() -> None:
    assert status_error(b"") == "status: empty input"
    assert command_error(b"") == "command: empty input"
    assert status_error(vectors()["status_first", "packed"][:-1]) == "status: truncated input"
    assert status_error(b"\xa1\x00\x1a\x00") == (
        "status field 'version': expected a byte string, got unsigned integer"
    )


def test_missing_version_is_rejected() -> None:
    assert status_error(status_map(mtu=512)) == "status field 'version' is missing"
    assert status_error(status_map(version=b"1", update={1: 0})) == (
        "status field 'update.version' is missing"
    )
    assert command_error(cbor({2: {0: b"1", 2: 0}})) == "command Write field 'data' is missing"


def test_status_over_4_kib_is_rejected_before_decoding() -> None:
    fits = status_map(version=b"v" * 4091)
    assert len(fits) == MAX_STATUS_BYTES == 4096
    assert decode_status(fits).version == b"v" * 4091
    too_big = status_map(version=b"v" * 4092)
    assert len(too_big) == 4097
    assert status_error(too_big) == "status: 4097 bytes is over the 4096-byte limit"
    # Garbage of that size gets the same answer: the size is checked before the content.
    assert status_error(b"\xff" * 4097) == "status: 4097 bytes is over the 4096-byte limit"
    with pytest.raises(ProtocolError, match="4097 bytes is over"):
        decode_status(memoryview(bytearray(4097)))
    assert decode_status(bytearray(fits)) == decode_status(fits)


def test_text_version_is_accepted_leniently_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="delivery.protocol"):
        status = decode_status(status_map(version="0.1.0", update={0: "0.1.1", 1: 4}))
        named = decode_status(cbor({"version": "0.1.0"}))
    assert status == Status(b"0.1.0", update=UpdateStatus(b"0.1.1", 4))
    assert named == Status(b"0.1.0")
    messages = [r.getMessage() for r in caplog.records if r.name == "delivery.protocol"]
    assert messages == [
        "status field 'version': got text instead of a byte string; accepted as its UTF-8 bytes",
        "status field 'update.version': got text instead of a byte string; "
        "accepted as its UTF-8 bytes",
        "status field 'version': got text instead of a byte string; accepted as its UTF-8 bytes",
    ]
    bad_utf8 = status_map(version=Raw(b"\x62\xff\xfe"))
    assert status_error(bad_utf8) == "status field 'version': text is not valid UTF-8"


def test_trailing_garbage_is_rejected() -> None:
    assert status_error(vectors()["status_first", "packed"] + b"\x00") == (
        "status: 1 trailing byte(s) after the message"
    )
    assert command_error(vectors()["wait", "named"] + b"\xf6\xf6") == (
        "command: 2 trailing byte(s) after the message"
    )


def test_deep_nesting_is_rejected_without_recursion() -> None:
    too_deep = status_map(version=b"1", mtu=Raw(b"\x81" * MAX_DEPTH + b"\x01"))  # depth 5
    assert status_error(too_deep) == (
        "status field 'mtu': expected an unsigned 32-bit integer, got array"
    )
    update_nest = status_map(version=b"1", update={0: b"2", 1: {0: {0: {}}}})
    assert "status field 'update.offset'" in status_error(update_nest)
    assert status_error(b"\x81" * 4000 + b"\x00") == "status: expected a map, got array"
    assert command_error(b"\x81" * 100_000 + b"\x00").startswith("command: expected a map")
    assert "got map" in command_error(cbor({0: {0: Raw(b"\xa1\x00" * 50_000 + b"\x00")}}))


def test_unknown_keys_are_rejected() -> None:
    named = cbor({"version": b"0.1.0", "mtu": 512, "firmware": "x"})
    assert status_error(named) == "status: unknown field 'firmware'"
    assert status_error(cbor({0: b"1", 5: None})) == "status: unknown field 5"
    assert status_error(cbor({0: b"1", -1: None})) == (
        "status: map keys must be unsigned integers or text, got integer -1"
    )
    assert command_error(cbor({"Write": {"version": b"1", "offest": 0}})) == (
        "command Write: unknown field 'offest'"
    )
    assert command_error(cbor({5: {}})) == "command: unknown variant 5"
    assert command_error(cbor({"Reboot": {}})) == "command: unknown variant 'Reboot'"


def test_duplicate_keys_are_rejected_in_either_spelling() -> None:
    twice = cbor(Pairs([(0, b"1"), (1, 5), (1, 6)]))
    assert status_error(twice) == "status field 'mtu': duplicate key"
    mixed = cbor(Pairs([(0, b"1"), ("version", b"2")]))
    assert status_error(mixed) == "status field 'version': duplicate key"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": 1}, "status field 'version': expected a byte string, got integer 1"),
        ({"version": None}, "status field 'version': expected a byte string, got null"),
        ({"version": [b"1"]}, "status field 'version': expected a byte string, got array"),
        (
            {"version": b"1", "update": [b"1", 0]},
            "status field 'update': expected a map, got array",
        ),
        (
            {"version": b"1", "mtu": Raw(b"\xf9\x3c\x00")},
            "status field 'mtu': expected an unsigned 32-bit integer, got float",
        ),
        (
            {"version": b"1", "mtu": Raw(b"\xfb" + bytes(8))},
            "status field 'mtu': expected an unsigned 32-bit integer, got float",
        ),
        (
            {"version": Raw(b"\xc2\x41\x01")},
            "status field 'version': expected a byte string, got tag",
        ),
        (
            {"version": Raw(b"\x5f\x41\x31\xff")},
            "status field 'version': expected a byte string, got indefinite-length byte string",
        ),
        (
            {"version": Raw(b"\x7f\x61\x31\xff")},
            "status field 'version': expected a byte string, got indefinite-length text",
        ),
        (
            {"version": b"1", "mtu": Raw(b"\xf7")},
            "status field 'mtu': expected an unsigned 32-bit integer, got undefined",
        ),
        (
            {"version": b"1", "mtu": Raw(b"\x1c")},
            "status field 'mtu': expected an unsigned 32-bit integer, got malformed "
            "unsigned integer",
        ),
        (
            {"version": Raw(b"\x5a\xff\xff\xff\xff")},
            "status field 'version': byte string runs past the end of the input",
        ),
        (
            {"version": Raw(b"\x7b" + b"\xff" * 8)},
            "status field 'version': text runs past the end of the input",
        ),
    ],
)
def test_wrong_types_are_rejected_with_the_field_named(
    fields: dict[str, Any], message: str
) -> None:
    assert status_error(status_map(**fields)) == message


def test_indefinite_maps_and_bad_command_shapes_are_rejected() -> None:
    assert (
        status_error(b"\xbf\x00\x41\x31\xff") == "status: expected a map, got indefinite-length map"
    )
    assert command_error(b"\xbf\x00\xa0\xff").startswith("command: expected a map with one entry")
    assert command_error(cbor({0: {}, 1: {0: b"1"}})) == (
        "command: expected a map with one entry (the variant), got 2 entries"
    )
    assert command_error(cbor({1: [b"1", None, None]})) == (
        "command Sync: expected a map, got array"
    )
    assert command_error(cbor({3: {0: b"1", 2: "sum"}})) == (
        "command Swap field 'checksum': expected a byte string, got text"
    )
    assert command_error(cbor({2: {0: b"1", 2: 0, 3: Raw(b"\x59\x02\x00" + bytes(10))}})) == (
        "command Write field 'data': byte string runs past the end of the input"
    )
