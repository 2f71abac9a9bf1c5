"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def per_op_ns(fn: Callable[[], object], budget_s: float, repeats: int = 5) -> float:
    """Best-of-``repeats`` ns per call of ``fn``, each repeat about ``budget_s`` long."""
    start = time.perf_counter_ns()
    for _ in range(10):
        fn()
    once = max((time.perf_counter_ns() - start) / 10, 1.0)
    n = max(10, min(200_000, int(budget_s * 1e9 / once)))
    best = float("inf")
    gc.collect()
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best
