"""Which wave a device is in: its labels and a sticky hash of ``<app>/<device>``.

No write is needed: any worker computes the same wave for a device, at any time. Selector
waves come first (the first whose selector matches); the other devices fall into the first
percent wave whose cumulative share covers their bucket. A device outside the cohort is not
in the rollout (None); one that no wave covers gets the wave count (it waits for the end).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ajour_build.core.spec.rollout import RolloutPolicy

BUCKETS = 10_000
_EMPTY: Mapping[str, str] = {}


def bucket(application: str, device: str) -> int:
    """The device's bucket, 0..9999, from the SHA-256 of ``<app>/<device>``."""
    digest = hashlib.sha256(f"{application}/{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def wave_of(
    policy: RolloutPolicy,
    application: str,
    device: str,
    labels: Mapping[str, str] | None = None,
) -> int | None:
    """The 0-based wave of the device; None when it is outside the cohort."""
    found = dict(labels or _EMPTY)
    if policy.cohort is not None and not policy.cohort.matches(found):
        return None
    waves = policy.waves
    for i, wave in enumerate(waves):
        if wave.selector is not None and wave.selector.matches(found):
            return i
    share = bucket(application, device)
    for i, wave in enumerate(waves):
        if wave.percent is not None and share < wave.percent * (BUCKETS // 100):
            return i
    return len(waves)
