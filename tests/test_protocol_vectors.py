"""The embedded-update wire codec, byte-exact with serde_cbor: the vendored vectors, what
serde_cbor accepts, integer ranges."""

from __future__ import annotations

import pytest

from delivery.errors import DeliveryError
from delivery.protocol import (
    Command,
    ProtocolError,
    Status,
    Swap,
    Sync,
    UpdateStatus,
    Wait,
    Write,
    decode_command,
    decode_status,
    encode_command,
    encode_status,
)
from tests.protocol_cases import (
    FORMS,
    U32_MAX,
    VALUES,
    Raw,
    cbor,
    command_error,
    decode,
    encode,
    status_error,
    status_map,
    vectors,
)

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
