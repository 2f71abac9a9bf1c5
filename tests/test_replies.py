"""The reply memo: a repeated status gets the bytes a fresh decision would give, never a
reply computed for another target or policy, and the memo stays within its budget."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ajour_build.core.fleet import load_fleet
from delivery.decision import DEFAULT_POLICY, FirmwareImage, Policy, decide
from delivery.device import SimulatedDevice
from delivery.protocol import Status, UpdateStatus, decode_command, decode_status, encode_command
from delivery.protocol import encode_status as encode
from delivery.replies import ENTRY_OVERHEAD, ReplyMemo
from delivery.sources.layout import RECHECK_S
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker, _reply
from tests.test_sources import publish

# Two targets with the same version and other bytes (a re-tagged version), one with another
# version, and none: a memo keyed by value rather than by the very object would mix them up.
TARGETS = (
    FirmwareImage.from_image(b"1.0", bytes(range(256)) * 3),
    FirmwareImage.from_image(b"1.0", bytes(range(255, -1, -1)) * 3),
    FirmwareImage.from_image(b"2.0", b"\x5a" * 1000),
    None,
)
POLICIES = (DEFAULT_POLICY, Policy(default_mtu=64, min_mtu=16, max_mtu=128, poll_synced=None))

versions = st.sampled_from([b"0.9", b"1.0", b"2.0"])
statuses = st.builds(
    Status,
    versions,
    st.none() | st.sampled_from([0, 1, 64, 512, 2**32 - 1]),
    st.none() | st.integers(0, 3),
    st.none() | st.builds(UpdateStatus, versions, st.sampled_from([0, 64, 512, 768, 999, 1000])),
)


@given(
    st.lists(st.tuples(st.integers(0, len(TARGETS) - 1), st.integers(0, 1), statuses), max_size=80),
    st.sampled_from([0, 900, 4000, 1 << 20]),
)
def test_the_memo_answers_as_a_fresh_decision_would(
    steps: list[tuple[int, int, Status]], budget: int
) -> None:
    memo = ReplyMemo(budget)
    for target_index, policy_index, status in steps:
        target, policy = TARGETS[target_index], POLICIES[policy_index]
        payload = encode(status)
        fresh = _reply(decode_status(payload), target, decide(status, target, policy), "")
        assert fresh.command == encode_command(decide(decode_status(payload), target, policy))
        remembered = memo.get(target, policy, payload)
        if remembered is None:
            memo.put(target, policy, payload, fresh)
        else:
            assert remembered == fresh, (target, policy, status)
        assert memo.size <= budget
    if budget == 0:
        assert memo.entries == 0


def test_the_memo_drops_old_tables_first_then_old_entries() -> None:
    status = encode(Status(b"0.9", 64, None, None))
    memo = ReplyMemo(budget=10 * (len(status) + ENTRY_OVERHEAD + 100))
    old, new = TARGETS[0], TARGETS[2]
    memo.put(
        old,
        DEFAULT_POLICY,
        status,
        _reply(decode_status(status), old, decide(decode_status(status), old), ""),
    )
    assert memo.get(old, DEFAULT_POLICY, status) is not None
    for offset in range(0, 1000, 64):  # more than the budget holds, all for the new target
        payload = encode(Status(b"0.9", 64, None, UpdateStatus(b"2.0", offset)))
        status_ = decode_status(payload)
        memo.put(new, DEFAULT_POLICY, payload, _reply(status_, new, decide(status_, new), ""))
        assert memo.size <= memo.budget
    assert memo.get(old, DEFAULT_POLICY, status) is None, "the oldest table goes first"
    first = encode(Status(b"0.9", 64, None, UpdateStatus(b"2.0", 0)))
    last = encode(Status(b"0.9", 64, None, UpdateStatus(b"2.0", 960)))
    assert memo.get(new, DEFAULT_POLICY, first) is None, "then the oldest entries"
    assert memo.get(new, DEFAULT_POLICY, last) is not None


FLEET = """\
kind: Application
metadata: {name: app}
spec: {firmware: {container: {image: fw/app:latest}}}
""" + "".join(f"---\nmetadata: {{name: dev{i}, application: app}}\n" for i in range(6))


def converge(worker: Worker, device: SimulatedDevice, name: str) -> None:
    for _ in range(1000):
        reply = worker.handle("app", name, encode(device.status()))
        assert reply is not None
        device.apply(decode_command(reply))
        if device.synced:
            return
    raise AssertionError(f"{name} did not converge")


def test_a_fleet_updates_through_the_memo_and_a_new_publish_is_never_answered_stale(
    tmp_path: Path,
) -> None:
    url = f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest"
    publish(tmp_path, url, "1.0", bytes(range(256)) * 20)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    worker = Worker(
        Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}"),
        StatusStore(),
    )
    devices = [SimulatedDevice(b"0.9", mtu=512) for _ in range(6)]
    for i, device in enumerate(devices):
        converge(worker, device, f"dev{i}")
        assert device.version == b"1.0" and device.swaps_rejected == 0
    counts = worker.counters.snapshot()
    per_device = counts["memo_miss"]  # the first device's exchanges: every one new
    assert counts["memo_hit"] == 5 * per_device, counts  # the five others walk the same path

    # The same version re-published with other bytes: nobody gets a reply of the old image
    publish(tmp_path, url, "1.1", bytes(range(255, -1, -1)) * 20)
    worker.targets.invalidate()
    for i, device in enumerate(devices):
        converge(worker, device, f"dev{i}")
        assert device.version == b"1.1" and device.swaps_rejected == 0
    row = worker.store.get("app", "dev5") if worker.store else None
    assert row is not None and (row.state, row.current, row.target) == ("Synced", "1.1", "1.1")

    publish(tmp_path, url, "1.2", b"\x01" * 3000)  # no event: seen once RECHECK_S has passed
    time.sleep(RECHECK_S * 2)
    converge(worker, devices[0], "dev0")
    assert devices[0].version == b"1.2"


def test_garbled_statuses_never_enter_the_memo(tmp_path: Path) -> None:
    url = f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest"
    publish(tmp_path, url, "1.0", b"x" * 100)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    worker = Worker(Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}"))
    for _ in range(3):
        assert worker.handle("app", "dev0", b"\xff\x00garbage") is None
    assert worker.replies.entries == 0
    assert worker.counters.snapshot()["rejected"] == 3
