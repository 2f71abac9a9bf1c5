"""delivery/delta.py: the streaming patch applier equals detools.apply_patch, and refuses
garbled or truncated patches with a PatchError (never another exception, never a hang)."""

from __future__ import annotations

import io
import time

import detools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.delta import PatchApplier, PatchError, apply_patch
from delivery.errors import DeliveryError

COMPRESSIONS = ("crle", "none")


def make_patch(old: bytes, new: bytes, compression: str = "crle") -> bytes:
    out = io.BytesIO()
    detools.create_patch(
        io.BytesIO(old), io.BytesIO(new), out, compression=compression, patch_type="sequential"
    )
    return out.getvalue()


def detools_apply(old: bytes, patch: bytes) -> bytes:
    out = io.BytesIO()
    detools.apply_patch(io.BytesIO(old), io.BytesIO(patch), out)
    return out.getvalue()


@st.composite
def image_pairs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """An old image and a new one: random, empty, identical, one byte changed, appended to,
    truncated, or a block inserted."""
    repeated = st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(0, 80))
    old = draw(st.binary(max_size=600) | repeated)
    how = draw(st.sampled_from(["random", "same", "empty", "byte", "append", "truncate", "insert"]))
    if how == "random":
        return old, draw(st.binary(max_size=600))
    if how == "same":
        return old, old
    if how == "empty":
        return (old, b"") if draw(st.booleans()) else (b"", old)
    if how == "byte" and old:
        i = draw(st.integers(0, len(old) - 1))
        return old, old[:i] + bytes([(old[i] + draw(st.integers(1, 255))) % 256]) + old[i + 1 :]
    if how == "append":
        return old, old + draw(st.binary(min_size=1, max_size=64))
    if how == "truncate" and old:
        return old, old[: draw(st.integers(0, len(old) - 1))]
    i = draw(st.integers(0, len(old)))
    return old, old[:i] + draw(st.binary(min_size=1, max_size=40)) + old[i:]


def feed_in_chunks(old: bytes, patch: bytes, cuts: list[int]) -> bytes:
    out: list[bytes] = []
    applier = PatchApplier(old, out.append)
    last = 0
    for cut in [*sorted({c % (len(patch) + 1) for c in cuts}), len(patch)]:
        applier.feed(patch[last:cut])
        last = cut
    applier.finish()
    assert applier.done
    return b"".join(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_pairs(), st.sampled_from(COMPRESSIONS), st.lists(st.integers(0, 10_000), max_size=6))
def test_equals_detools(pair: tuple[bytes, bytes], compression: str, cuts: list[int]) -> None:
    old, new = pair
    patch = make_patch(old, new, compression)
    assert detools_apply(old, patch) == new
    assert apply_patch(old, patch) == new
    assert feed_in_chunks(old, patch, cuts) == new  # any chunking gives the same image


def test_byte_by_byte_and_old_read_through_a_function() -> None:
    old = bytes(range(256)) * 8
    new = old[:700] + b"changed" + old[707:] + b"tail"
    patch = make_patch(old, new)
    reads: list[tuple[int, int]] = []

    def read(offset: int, size: int) -> bytes:
        reads.append((offset, size))
        return old[offset : offset + size]

    out = bytearray()
    applier = PatchApplier(read, out.extend, old_size=len(old))
    for i in range(len(patch)):
        assert not applier.done
        applier.feed(patch[i : i + 1])
    assert applier.finish() == len(new) and bytes(out) == new
    assert all(0 <= o and o + s <= len(old) for o, s in reads)


def test_one_line_change_is_small_with_crle_not_with_none() -> None:
    """Why the published format is crle: a bsdiff diff stream is as long as the image."""
    old = bytes(range(256)) * 16
    new = old[:2000] + b"\x01" + old[2001:]
    assert len(make_patch(old, new, "none")) > len(new)
    assert len(make_patch(old, new, "crle")) < 40


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image_pairs(),
    st.sampled_from(COMPRESSIONS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_garbled_patch_is_a_patch_error_or_detools_agrees(
    pair: tuple[bytes, bytes], compression: str, flips: list[tuple[int, int]]
) -> None:
    """A garbled patch is refused with a PatchError, or gives what detools gives; it never
    raises anything else and never hangs."""
    old, new = pair
    patch = bytearray(make_patch(old, new, compression))
    for at, value in flips:
        patch[at % len(patch)] = value
    started = time.thread_time()  # CPU time: the work done, not how often it ran
    try:
        got: bytes | None = apply_patch(old, bytes(patch), max_size=1 << 20)
    except PatchError as exc:
        assert str(exc)
        got = None
    assert time.thread_time() - started < 2.0
    if got is not None:
        try:
            assert detools_apply(old, bytes(patch)) == got
        except detools.Error:
            pass  # detools refuses what we accepted: only where it is stricter on trailing data


@settings(max_examples=200, deadline=None)
@given(image_pairs(), st.sampled_from(COMPRESSIONS), st.data())
def test_truncated_patch_is_refused(
    pair: tuple[bytes, bytes], compression: str, data: st.DataObject
) -> None:
    old, new = pair
    patch = make_patch(old, new, compression)
    cut = data.draw(st.integers(0, len(patch) - 1))
    applier = PatchApplier(old, lambda _b: None)
    applier.feed(patch[:cut])
    if new and cut < len(patch):
        with pytest.raises(PatchError, match="truncated"):
            applier.finish()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (b"\x10\x00", r"patch byte 0: expected a detools sequential patch header .* type 1"),
        (b"\x01\x00", r"compression 1 is not supported; expected 0 \(none\) or 2 \(crle\)"),
        (b"\x02\x43", r"the new image size is -3; expected 0 to"),
        (b"\x02" + b"\xff" * 12, r"new image size runs over 10 bytes"),
        (
            b"\x02\x03\x05",
            r"expected a CRLE segment kind, 0 \(scattered\) or 1 \(repeated\), got 5",
        ),
        (
            b"\x02\x03\x00\x02\x00\x09",
            r"diff size 9 does not fit the new image \(3 of 3 bytes left\)",
        ),
        (b"\x00\x03\x01", r"data format part \(1 bytes\).*not supported"),
        (
            b"\x00\x03\x00\x00\x03abc\x00\x00",
            r"patch byte 9: 1 byte\(s\) after the end of the patch",
        ),
        (
            b"\x00\x03\x00\x03\x01\x02\x03",
            r"patch byte 4: the patch reads old image bytes 0 to 3, but the old image has 2 bytes",
        ),
    ],
)
def test_precise_errors(patch: bytes, message: str) -> None:
    with pytest.raises(PatchError, match=message) as caught:
        apply_patch(b"ab", patch, max_size=1 << 20)
    assert isinstance(caught.value, DeliveryError)


def test_a_huge_repeated_run_is_refused_quickly() -> None:
    """A CRLE run of 2**60 zero bytes (zero-length records forever) stops at the record cap."""
    patch = b"\x02\x03" + b"\x01" + b"\xff" * 8 + b"\x0f" + b"\x00"
    started = time.thread_time()  # CPU time: the work done, not how often it ran
    with pytest.raises(PatchError, match="records for a 3-byte image"):
        apply_patch(b"abc", patch)
    assert time.thread_time() - started < 1.0


def test_new_image_over_max_size_is_refused_at_the_header() -> None:
    patch = make_patch(b"", b"x" * 100)
    with pytest.raises(PatchError, match="the new image size is 100; expected 0 to 64 bytes"):
        PatchApplier(b"", lambda _b: None, max_size=64).feed(patch[:3])


def test_errors_are_sticky() -> None:
    applier = PatchApplier(b"", lambda _b: None)
    with pytest.raises(PatchError, match="header") as first:
        applier.feed(b"\x10")
    with pytest.raises(PatchError) as again:
        applier.feed(b"\x00\x00")  # a valid empty patch, but the applier is spent
    assert again.value is first.value
    with pytest.raises(PatchError) as finished:
        applier.finish()
    assert finished.value is first.value
