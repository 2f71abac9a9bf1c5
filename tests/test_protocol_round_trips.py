"""The embedded-update wire codec: hypothesis round trips of every status and command."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from delivery.protocol import (
    Command,
    Status,
    decode_command,
    decode_status,
    encode_command,
    encode_status,
)
from tests.protocol_cases import cbor, commands, statuses, tree

# --- Round trips ------------------------------------------------------------------------------


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
