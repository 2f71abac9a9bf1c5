"""The embedded-update wire protocol: Status (device → server) and Command (server → device).

A sans-IO codec, byte-compatible with Rust ``serde_cbor`` 0.11 as used by drogue's
embedded-update crate. The wire format (packed and named forms) is documented in
:mod:`delivery.protocol.messages`, which holds the message types; :mod:`.writer` encodes,
:mod:`.reader` decodes (strictly: anything else is a :class:`ProtocolError`). Import the
public names from here.
"""

from __future__ import annotations

from delivery.protocol.messages import (
    MAX_DEPTH,
    MAX_STATUS_BYTES,
    PATCH_DETOOLS,
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
from delivery.protocol.reader import decode_command, decode_status
from delivery.protocol.writer import encode_command, encode_status

__all__ = [
    "MAX_DEPTH",
    "MAX_STATUS_BYTES",
    "PATCH_DETOOLS",
    "U32_MAX",
    "Command",
    "ProtocolError",
    "Status",
    "Swap",
    "Sync",
    "UpdateStatus",
    "Wait",
    "Write",
    "WritePatch",
    "decode_command",
    "decode_status",
    "encode_command",
    "encode_status",
]
