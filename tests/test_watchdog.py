"""The client-side watchdog (delivery/watchdog.py) on real sockets: it shuts down the socket
of a call that outlives its limit, and never touches one whose call ended in time."""

from __future__ import annotations

import socket
import time

import pytest

from delivery.watchdog import Watchdog


def test_a_call_that_outlives_the_limit_has_its_socket_shut_down() -> None:
    watchdog = Watchdog(0.2)
    ours, server = socket.socketpair()
    try:
        call = watchdog.arm(ours.fileno())
        started = time.monotonic()
        ours.settimeout(10)
        assert ours.recv(1) == b""  # the blocked read ends: the socket was shut down
        assert 0.15 < time.monotonic() - started < 10
        assert watchdog.disarm(call) is True
        assert watchdog.fired == 1
    finally:
        ours.close()
        server.close()
        watchdog.close()


def test_a_call_disarmed_in_time_is_left_alone() -> None:
    watchdog = Watchdog(0.2)
    ours, server = socket.socketpair()
    try:
        for _ in range(3):
            call = watchdog.arm(ours.fileno())
            server.sendall(b"x")
            assert ours.recv(1) == b"x"
            assert watchdog.disarm(call) is False
        time.sleep(0.4)  # past the limit: nothing is armed any more
        server.sendall(b"y")
        assert ours.recv(1) == b"y"  # still open both ways
        assert watchdog.fired == 0
    finally:
        ours.close()
        server.close()
        watchdog.close()


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"expected seconds > 0, got 0"):
        Watchdog(0)
