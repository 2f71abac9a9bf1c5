"""The UART framing (``delivery.frames``): the shared vectors the C side checks too
(device/tests/test_frame.c), and hypothesis on what a noisy line does to a stream of frames.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.frames import (
    FrameReader,
    cobs_decode,
    cobs_encode,
    encode_frame,
    max_encoded,
)
from tests.conftest import REPO

VECTORS = REPO / "device" / "tests" / "uart-frames.tsv"


@dataclass(frozen=True)
class Vector:
    name: str
    kind: str
    payloads: list[bytes]
    bad: int
    wire: bytes


def _payload(text: str) -> bytes:
    return b"" if text == "." else bytes.fromhex(text)


def vectors() -> list[Vector]:
    rows = []
    for line in VECTORS.read_text().splitlines():
        if line.startswith("#") or not line:
            continue
        name, kind, payloads, bad, wire = line.split("\t")
        listed = [] if payloads == "-" else [_payload(p) for p in payloads.split(",")]
        rows.append(Vector(name, kind, listed, int(bad), bytes.fromhex(wire)))
    return rows


def test_the_vector_file_has_every_kind() -> None:
    kinds = [v.kind for v in vectors()]
    assert set(kinds) == {"cobs", "frame", "stream"}
    assert (kinds.count("cobs"), kinds.count("frame"), kinds.count("stream")) == (11, 8, 9)


@pytest.mark.parametrize("vector", vectors(), ids=lambda v: v.name)
def test_vectors(vector: Vector) -> None:
    if vector.kind == "cobs":
        (raw,) = vector.payloads
        assert cobs_encode(raw) == vector.wire
        assert cobs_decode(vector.wire) == raw
        return
    if vector.kind == "frame":
        (payload,) = vector.payloads
        assert encode_frame(payload) == vector.wire
        assert len(vector.wire) <= max_encoded(len(payload)) + 2
    reader = FrameReader()
    assert reader.feed(vector.wire) == vector.payloads
    assert (reader.counts.bad_crc, reader.counts.oversized) == (vector.bad, 0)
    one_by_one = FrameReader()  # the same, one byte at a time
    got = [f for i in range(len(vector.wire)) for f in one_by_one.feed(vector.wire[i : i + 1])]
    assert got == vector.payloads and one_by_one.counts == reader.counts


def test_a_frame_is_its_payload_and_crc_between_markers() -> None:
    wire = encode_frame(b"\x00hi")
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert cobs_decode(wire[1:-1]) == b"\x00hi" + zlib.crc32(b"\x00hi").to_bytes(4, "big")


def test_a_piece_longer_than_any_frame_is_dropped_as_it_comes() -> None:
    reader = FrameReader(max_frame=64)
    for _ in range(100):  # a babbling line: the buffer stays bounded
        assert reader.feed(b"\x01" * 1000) == []
        assert len(reader._buf) <= max_encoded(64)
    assert reader.feed(encode_frame(b"after")) == [b"after"]
    assert (reader.counts.oversized, reader.counts.bad_crc) == (1, 0)
    assert reader.counts.skipped_bytes == 100_000
    assert reader.feed(encode_frame(bytes(65))) == []  # one byte over max_frame
    assert reader.counts.bad_crc + reader.counts.oversized == 2


def test_a_frame_the_line_closed_in_is_truncated() -> None:
    reader = FrameReader()
    assert reader.feed(encode_frame(b"cut short")[:6]) == []
    reader.reset()
    assert reader.feed(encode_frame(b"next")) == [b"next"]
    assert (reader.counts.truncated, reader.counts.skipped_bytes) == (1, 5)


# ---- hypothesis: a noisy line ---------------------------------------------------------

PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
payloads = st.binary(min_size=0, max_size=300)
garbage = st.binary(min_size=1, max_size=80)


def feed_in_chunks(reader: FrameReader, wire: bytes, cuts: list[int]) -> list[bytes]:
    """``wire`` fed as the line gives it: in pieces cut at ``cuts``."""
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    return [f for a, b in itertools.pairwise(bounds) for f in reader.feed(wire[a:b])]


@PROPERTIES
@given(
    st.lists(st.tuples(garbage | st.just(b""), payloads), min_size=1, max_size=6),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_every_frame_after_garbage_is_recovered(
    stream: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    """Garbage between frames (any bytes, ``00`` included) never costs a frame: each frame's
    leading marker ends the garbage before it."""
    wire = b"".join(junk + encode_frame(payload) for junk, payload in stream)
    reader = FrameReader()
    assert feed_in_chunks(reader, wire, cuts) == [payload for _, payload in stream]


@PROPERTIES
@given(
    st.lists(payloads, min_size=1, max_size=5),
    st.lists(st.tuples(st.integers(0, 10_000), garbage, st.booleans()), min_size=1, max_size=4),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_garbage_inside_frames_never_yields_a_wrong_payload(
    sent: list[bytes], damage: list[tuple[int, bytes, bool]], cuts: list[int]
) -> None:
    """Bytes inserted or overwritten anywhere, several times: what comes out is sent
    payloads, in order (damaged frames are dropped, never passed on changed)."""
    wire = bytearray(b"".join(encode_frame(p) for p in sent))
    for at, junk, overwrite in damage:
        at %= len(wire) + 1
        wire[at : at + len(junk) if overwrite else at] = junk
    got = feed_in_chunks(FrameReader(), bytes(wire), cuts)
    rest = iter(sent)
    assert all(any(g == p for p in rest) for g in got), f"not a subsequence of what was sent: {got}"


@PROPERTIES
@given(
    st.lists(payloads, min_size=1, max_size=5),
    st.integers(0, 10_000),
    garbage,
    st.booleans(),
)
def test_one_burst_costs_only_the_frames_it_hits(
    sent: list[bytes], at: int, junk: bytes, overwrite: bool
) -> None:
    """Each frame has its own two markers, so every frame a burst of noise does not touch
    comes through, whatever the noise did to its neighbours."""
    frames = [encode_frame(p) for p in sent]
    wire = bytearray(b"".join(frames))
    at %= len(wire) + 1
    end = at + len(junk) if overwrite else at
    wire[at:end] = junk
    spans, start = [], 0
    for frame in frames:
        spans.append((start, start + len(frame)))
        start += len(frame)
    untouched = [
        p
        for p, (s, e) in zip(sent, spans, strict=True)
        if end <= s or at >= e  # (an insertion: end == at)
    ]
    got = FrameReader().feed(bytes(wire))
    rest = iter(got)
    assert all(any(g == p for g in rest) for p in untouched), (untouched, got)
