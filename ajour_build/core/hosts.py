"""Which hosts count as this machine: the one rule for "plain http is fine here"."""

from __future__ import annotations

import ipaddress


def host_name(host: str) -> str:
    """The name or address in ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:  # name:port or v4:port; a bare IPv6 address has two or more
        return host.split(":", 1)[0]
    return host


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (with or without a port): plain http may go there
    without ``insecure``, since nothing leaves the machine."""
    name = host_name(host).lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
