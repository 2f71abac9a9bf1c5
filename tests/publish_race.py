"""Two publishers of one version, started together in threads or in separate processes.

Each contender runs its trials in order and waits at a barrier before each, so both publish
a trial's version at the same moment. ``race`` returns what each contender saw, per trial.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ajour_build.core.errors import PublishError
from ajour_build.publish.destination import publisher_for
from ajour_build.publish.publisher import FirmwareArtifact


@dataclass(frozen=True)
class Outcome:
    trial: int
    contender: int
    won: bool
    detail: str  # the manifest digest for a winner, the error for a loser


def _contender(
    index: int, trials: list[tuple[str, str, str]], barrier: Any, out: Any, timeout: float
) -> None:
    for trial, (url, path, version) in enumerate(trials):
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            return
        try:
            published = publisher_for(url, {}).publish(FirmwareArtifact(Path(path), version))
            out.put(Outcome(trial, index, True, published.digest))
        except PublishError as exc:
            out.put(Outcome(trial, index, False, str(exc)))


def race(
    contenders: list[list[tuple[str, str, str]]], mode: str, timeout: float = 120.0
) -> list[list[Outcome]]:
    """Run each contender's trials (url, firmware path, version) against the others, in
    threads or (``mode="processes"``) spawned processes; outcomes per trial, by contender."""
    count, trials = len(contenders), len(contenders[0])
    out: Any
    if mode == "threads":
        barrier, out = threading.Barrier(count), queue.Queue()
        runners: list[Any] = [
            threading.Thread(target=_contender, args=(i, c, barrier, out, timeout))
            for i, c in enumerate(contenders)
        ]
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(count), ctx.Queue()
        runners = [
            ctx.Process(target=_contender, args=(i, c, barrier, out, timeout))
            for i, c in enumerate(contenders)
        ]
    for runner in runners:
        runner.start()
    outcomes: list[list[Outcome]] = [[] for _ in range(trials)]
    for _ in range(count * trials):
        got: Outcome = out.get(timeout=timeout)
        outcomes[got.trial].append(got)
    for runner in runners:
        runner.join(timeout)
    return [sorted(o, key=lambda x: x.contender) for o in outcomes]
