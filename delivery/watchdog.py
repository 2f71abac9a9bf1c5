"""A watchdog that ends a database call whose server stopped answering.

``statement_timeout`` is enforced by the server and ``tcp_user_timeout`` by the kernel when
bytes go unacknowledged. A server that is frozen (a stopped process, a hung disk, a VM
paused) while its kernel still acknowledges defeats both: the client waits for an answer
that never comes, holding the store's lock, and every device status behind it waits too.

:class:`Watchdog` covers that case from the client side: a call is armed with its socket
before it starts and disarmed when it ends; one thread (started on first use) shuts the
socket down (``shutdown(SHUT_RDWR)`` on a duplicate of the descriptor) when an armed call
outlives its limit, so the blocked read returns at once with an error and the connection is
replaced by the next call. Disarming waits for a shutdown in progress, so a descriptor is
never touched after its call ended (and a reused number is never shut down by mistake).
"""

from __future__ import annotations

import os
import socket
import threading
import time


class Watchdog:
    """Ends calls that outlive ``limit`` seconds; :attr:`fired` counts them."""

    def __init__(self, limit: float, name: str = "watchdog") -> None:
        if limit <= 0:
            raise ValueError(f"watchdog limit: expected seconds > 0, got {limit!r}")
        self.limit = limit
        self.fired = 0
        self._name = name
        self._wake = threading.Condition()
        self._armed: tuple[float, int, int] | None = None  # (deadline, fd, call number)
        self._calls = 0
        self._fired_call = 0  # the number of the last call the watchdog ended
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, fd: int) -> int:
        """Watch the call about to run on socket ``fd``; its number, for :meth:`disarm`."""
        with self._wake:
            self._calls += 1
            self._armed = (time.monotonic() + self.limit, fd, self._calls)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()
            return self._calls

    def disarm(self, call: int) -> bool:
        """The call ended; whether the watchdog ended it (its socket was shut down)."""
        with self._wake:
            if self._armed is not None and self._armed[2] == call:
                self._armed = None
            return self._fired_call == call

    def close(self) -> None:
        with self._wake:
            self._closed, self._armed = True, None
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                if self._armed is None:
                    self._wake.wait()
                    continue
                deadline, fd, call = self._armed
                left = deadline - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                self._armed = None
                self._fired_call = call
                self.fired += 1
                _shut_down(fd)


def _shut_down(fd: int) -> None:
    """Shut the socket behind ``fd`` down both ways (its owner still closes it)."""
    try:
        dup = os.dup(fd)
    except OSError:
        return
    with socket.socket(fileno=dup) as sock:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
