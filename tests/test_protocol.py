"""The embedded-update wire codec: byte-exact with serde_cbor, strict on bad input."""

from __future__ import annotations

import dataclasses
import logging
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.errors import DeliveryError
from delivery.protocol import (
    MAX_DEPTH,
    MAX_STATUS_BYTES,
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


# --- The reference vectors ---------------------------------------------------------------------


def test_vector_file_holds_exactly_the_values_described_in_its_header() -> None:
    assert set(vectors()) == {(name, form) for name in VALUES for form in FORMS}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(VALUES))
def test_encoding_matches_serde_cbor_byte_for_byte(name: str, form: str) -> None:
    assert encode(VALUES[name], named=form == "named").hex() == vectors()[name, form].hex()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(VALUES))
def test_decoding_the_vectors_gives_the_values(name: str, form: str) -> None:
    assert decode(VALUES[name], vectors()[name, form]) == VALUES[name]


def test_packed_is_the_default() -> None:
    assert encode_status(Status(b"0.1.0", 512)) == vectors()["status_first", "packed"]
    assert encode_command(Wait(7, 300)) == vectors()["wait", "packed"]


# --- Round trips ------------------------------------------------------------------------------

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


@given(statuses, st.booleans())
def test_status_round_trips(status: Status, named: bool) -> None:
    data = encode_status(status, named=named)
    assert data == cbor(tree(status, named))  # same bytes as the independent writer
    assert decode_status(data) == status


@given(commands, st.booleans())
def test_command_round_trips(cmd: Command, named: bool) -> None:
    data = encode_command(cmd, named=named)
    assert data == cbor(tree(cmd, named))
    assert decode_command(data) == cmd


@given(statuses, st.randoms(use_true_random=False))
def test_packed_keys_in_any_order_decode(status: Status, rnd: Any) -> None:
    entries = list(tree(status, named=False).items())
    rnd.shuffle(entries)
    assert decode_status(cbor(dict(entries))) == status


@given(commands, st.booleans(), st.randoms(use_true_random=False))
def test_command_fields_in_any_order_decode(cmd: Command, named: bool, rnd: Any) -> None:
    ((variant, body),) = tree(cmd, named).items()
    entries = list(body.items())
    rnd.shuffle(entries)
    assert decode_command(cbor({variant: dict(entries)})) == cmd


def test_missing_optional_fields_are_none() -> None:
    assert decode_status(status_map(version=b"1")) == Status(b"1")
    assert decode_status(cbor({"version": b"1", "mtu": 64})) == Status(b"1", mtu=64)
    assert decode_command(cbor({0: {}})) == Wait(None, None)
    assert decode_command(cbor({"Sync": {"version": b"1"}})) == Sync(b"1", None, None)
    assert decode_command(cbor({3: {0: b"1", 2: b"c"}})) == Swap(b"1", None, b"c")


def test_packed_and_named_keys_may_mix_like_serde_cbor() -> None:
    data = cbor({0: b"1", "mtu": 64, 3: {"version": b"2", 1: 5}})
    assert decode_status(data) == Status(b"1", mtu=64, update=UpdateStatus(b"2", 5))


def test_non_minimal_integers_are_accepted_like_serde_cbor() -> None:
    data = status_map(version=b"1", mtu=Raw(b"\x1a\x00\x00\x02\x00"))
    assert decode_status(data).mtu == 512
    assert decode_status(cbor({0: b"1", Raw(b"\x18\x01"): 9})) == Status(b"1", mtu=9)


def test_bytes_like_input_is_accepted() -> None:
    data = vectors()["status_update", "packed"]
    assert decode_status(bytearray(data)) == VALUES["status_update"]
    assert decode_command(memoryview(vectors()["swap", "packed"])) == VALUES["swap"]


def test_long_strings_and_long_key_headers() -> None:
    big = Write(b"0.1.1", 1, 70_000, bytes(range(256)) * 300)
    data = encode_command(big)
    assert data.endswith(b"\x03\x5a\x00\x01\x2c\x00" + big.data)
    assert decode_command(data) == big
    long_key = cbor({Raw(b"\x78\x07version"): b"1"})
    assert decode_status(long_key) == Status(b"1")


def test_encoder_refuses_what_is_not_a_command() -> None:
    with pytest.raises(ProtocolError, match="expected Wait, Sync, Write, Swap or WritePatch"):
        encode_command(Status(b"1"))  # type: ignore[arg-type]


def test_protocol_error_is_a_delivery_error() -> None:
    assert issubclass(ProtocolError, DeliveryError)


# --- Integer ranges ---------------------------------------------------------------------------


def test_mtu_of_u32_max_is_accepted_the_decision_layer_clamps() -> None:
    assert decode_status(status_map(version=b"1", mtu=U32_MAX)).mtu == U32_MAX


def test_mtu_of_2_pow_32_is_rejected() -> None:
    message = status_error(status_map(version=b"1", mtu=2**32))
    assert message == (
        "status field 'mtu': expected an unsigned 32-bit integer, got integer 4294967296"
    )


def test_negative_and_non_integer_u32_fields_name_the_field() -> None:
    assert status_error(status_map(version=b"1", mtu="512")) == (
        "status field 'mtu': expected an unsigned 32-bit integer, got text"
    )
    assert "status field 'correlation_id'" in status_error(
        status_map(version=b"1", correlation_id=-1)
    )
    assert "got integer -1" in status_error(status_map(version=b"1", correlation_id=-1))
    assert "status field 'update.offset'" in status_error(
        status_map(version=b"1", update={0: b"2", 1: 2**40})
    )
    assert "command Wait field 'poll'" in command_error(cbor({0: {1: True}}))
    assert "command Write field 'offset': expected an unsigned 32-bit integer, got null" in (
        command_error(cbor({2: {0: b"1", 2: None, 3: b""}}))
    )


@pytest.mark.parametrize(
    "value",
    [
        Status(b"1", mtu=2**32),
        Status(b"1", correlation_id=-1),
        Status(b"1", update=UpdateStatus(b"1", 2**32)),
        Wait(correlation_id=None, poll=True),
        Write(b"1", None, -5, b""),
        Swap(b"1", 2**33, b""),
    ],
)
def test_encoder_refuses_values_a_device_cannot_decode(value: Status | Command) -> None:
    with pytest.raises(ProtocolError, match="expected an unsigned 32-bit integer"):
        encode(value)


def test_encoder_uses_minimal_integers() -> None:
    for n, size in ((0, 1), (23, 1), (24, 2), (255, 2), (256, 3), (65535, 3), (65536, 5)):
        assert len(encode_command(Wait(n, None))) == 6 + size
    assert encode_command(Wait(U32_MAX, None)) == bytes.fromhex("a100a2001affffffff01f6")


def test_write_framing_overhead() -> None:
    data = bytes(512)
    smallest = encode_command(Write(b"0.1.1", None, 0, data))
    largest = encode_command(Write(b"0.1.1", U32_MAX, U32_MAX, data))
    assert (len(smallest) - len(data), len(largest) - len(data)) == (18, 26)


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
