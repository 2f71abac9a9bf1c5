"""The listening socket of a server (``ajour-build serve``, ``ajour-delivery serve``), with
errors that name the address and the option that changes it."""

from __future__ import annotations

import errno
import socket

from ajour_build.core.errors import AjourError, PortInUseError


def listen(host: str, port: int, program: str, option: str, backlog: int = 1024) -> socket.socket:
    """A socket listening on ``host:port`` (``[v6]`` or a bare IPv6 address too).

    A taken port raises :class:`PortInUseError`; any other failure (no such address,
    a privileged port) an :class:`AjourError`, both naming ``option``."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        return socket.create_server((bare, port), family=family, backlog=backlog)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port, program, option) from None
        raise AjourError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another with {option}"
        ) from None
