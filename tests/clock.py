"""A clock the test moves by hand (``clock.now += 60``), for code that takes a ``clock``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now
