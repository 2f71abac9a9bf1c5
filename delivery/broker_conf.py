"""The mosquitto configuration that goes with broker-config's password file and ACL.

A complete ``mosquitto.conf`` (``mosquitto -c FILE``), not a ``conf.d`` snippet: Debian's
packaged configuration already sets ``persistence_location``, and mosquitto refuses a second
one (``Duplicate persistence_location value``), so a snippet could not carry persistence.
It holds paths and limits, never a password (nor a key: only its path).

Sizing. The worker's connection holds the shared subscription to every device's status
topic, and mosquitto keeps at most ``max_queued_messages`` QoS 1 messages per client beyond
those in flight and **drops the rest** (1,000 by default: with 10,000 devices updating at
once, 8,981 stalled). When every device sends a status at once, one worker connection may
have to hold all of them (the other workers of the group may be down), and a device whose
status waits in that queue sends it again after its timeout: so 2 statuses per device of
the fleet, and never less than mosquitto's own default. The limit applies to every client,
but a device has at most one command of its own waiting, so only the worker's queue grows.
``max_inflight_messages`` bounds the statuses on their way to one worker before it
acknowledges them: the rate is at most inflight / round trip, so mosquitto's default of 20
caps a worker 10 ms away at 2,000 statuses/s; 100 allows 10,000/s there.

Shared subscriptions (``$share/<group>/…``) need no setting in mosquitto 2: they are on, and
the ACL needs no ``$share`` line. mosquitto 2.0 grants a subscription and checks each
message's topic against the ``topic read`` lines when it delivers it, so the worker's lines
cover its shared subscription, and a device subscribed to another's topic receives nothing.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ajour_build.core.files import atomic_write
from delivery.broker import ACL, PASSWD, Ownership
from delivery.errors import DeliveryError

QUEUE_PER_DEVICE = 2
QUEUE_FLOOR = 1000  # mosquitto's own default: a small fleet is never given less
INFLIGHT = 100
AUTOSAVE_SECONDS = 60
CLIENT_EXPIRATION = "7d"
CONF = "mosquitto.conf"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def queued_messages(devices: int) -> int:
    """``max_queued_messages`` for a fleet of ``devices``: 2 per device, at least 1,000."""
    return max(QUEUE_FLOOR, QUEUE_PER_DEVICE * devices)


@dataclass(frozen=True)
class BrokerConf:
    """What the ``mosquitto.conf`` says; ``None`` for a limit: sized from the fleet."""

    port: int | None = None  # None: 8883 with TLS, else 1883
    bind: str | None = None  # None: every interface
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # devices must present a certificate it signed
    max_queued_messages: int | None = None
    max_inflight_messages: int = INFLIGHT
    persistence_dir: Path | None = None  # None: <out>/data
    persistence: bool = True


def checked_bind(address: str | None) -> str | None:
    """``--bind``: an IP address or a host name, nothing that could start another line."""
    if address is None:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if _HOST.fullmatch(address) and len(address) <= 253:
        return address
    raise DeliveryError(
        f"--bind {address!r}: expected an IP address (127.0.0.1, ::1) or a host name of this"
        " machine; leave it out to listen on every interface"
    )


def checked_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> None:
    """TLS on the listener needs a certificate and its key; a client CA needs both."""
    if (cert is None) != (key is None):
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise DeliveryError(
            f"{given} without {missing}: TLS on the listener needs both the certificate chain"
            " and its private key (PEM files); give both, or neither for plain MQTT"
        )
    if client_ca is not None and cert is None:
        raise DeliveryError(
            "--tls-client-ca needs TLS on the listener: give --tls-cert and --tls-key too"
        )


def _conf_path(path: Path, what: str) -> str:
    """``path`` made absolute, as one line of mosquitto.conf can hold it."""
    text = str(path.absolute())
    if any(ord(c) < 32 or ord(c) == 127 for c in text) or text != text.strip():
        raise DeliveryError(
            f"{what} {text!r}: mosquitto.conf cannot hold a path with control characters"
            " (a newline) or leading or trailing spaces; choose another directory"
        )
    return text


def render(conf: BrokerConf, devices: int, out: Path, user: str | None) -> str:
    """mosquitto.conf for a fleet of ``devices`` whose files go to ``out``; ``user``: who
    mosquitto runs as (None: its default)."""
    queue = conf.max_queued_messages
    sized = f"{QUEUE_PER_DEVICE} per device of the fleet ({devices}), at least {QUEUE_FLOOR}"
    lines = [
        "# generated by ajour-delivery broker-config; run it again when the fleet changes",
        f"# mosquitto -c {_conf_path(out / CONF, '--out')}",
        "per_listener_settings false",
        f"listener {listener_port(conf)}" + (f" {conf.bind}" if conf.bind else ""),
        *_tls_lines(conf),
        "allow_anonymous false",
        f"password_file {_conf_path(out / PASSWD, '--out')}",
        f"acl_file {_conf_path(out / ACL, '--out')}",
        "set_tcp_nodelay true",
    ]
    if user is not None:
        lines.append(f"user {user}")
    lines += [
        f"# {'--max-queued-messages' if queue is not None else sized}",
        f"max_queued_messages {queue if queue is not None else queued_messages(devices)}",
        f"max_inflight_messages {conf.max_inflight_messages}",
    ]
    if conf.persistence:
        data = _conf_path(data_dir(conf, out), "--persistence-dir")
        lines += [
            "persistence true",
            f"persistence_location {data}/",
            f"autosave_interval {AUTOSAVE_SECONDS}",
            f"persistent_client_expiration {CLIENT_EXPIRATION}",
        ]
    else:
        lines.append("persistence false")
    return "\n".join(lines) + "\n"


def listener_port(conf: BrokerConf) -> int:
    """``--port``, or MQTT's own: 8883 with TLS, 1883 without."""
    return conf.port if conf.port is not None else 8883 if conf.tls_cert else 1883


def _tls_lines(conf: BrokerConf) -> list[str]:
    """The listener's TLS settings (paths only: mosquitto reads the key itself)."""
    if conf.tls_cert is None or conf.tls_key is None:
        return []
    lines = [
        f"certfile {_conf_path(conf.tls_cert, '--tls-cert')}",
        f"keyfile {_conf_path(conf.tls_key, '--tls-key')}",
    ]
    if conf.tls_client_ca is not None:
        ca = _conf_path(conf.tls_client_ca, "--tls-client-ca")
        lines += [f"cafile {ca}", "require_certificate true"]
    return lines


def data_dir(conf: BrokerConf, out: Path) -> Path:
    """Where mosquitto keeps its database: ``--persistence-dir``, or ``<out>/data``."""
    return (conf.persistence_dir or out / "data").absolute()


def write_conf(text: str, conf: BrokerConf, out: Path, owner: Ownership) -> Path:
    """Write ``text`` to ``<out>/mosquitto.conf`` (all or nothing), after making the
    persistence directory for ``owner`` if it does not exist (an existing one is left as
    it is). Both go to ``owner``, as the password file and ACL do."""
    data = data_dir(conf, out)
    chown = (owner.uid, owner.gid) if (owner.uid, owner.gid) != (-1, -1) else None
    path = out / CONF
    try:
        if conf.persistence and not data.exists():
            data.mkdir(parents=True, mode=0o700)
            if chown is not None:
                os.chown(data, *chown)
            # mosquitto writes its database there: the owner, or with --group the group
            data.chmod(0o700 if owner.uid != -1 or owner.gid == -1 else 0o770)
        atomic_write(path, text, mode=owner.mode, owner=chown)
    except PermissionError as exc:
        raise DeliveryError(
            f"cannot write {exc.filename or path} for {owner.describe()}: {exc.strerror};"
            " handing files to another user or group needs root (or, for --group,"
            " membership of it)"
        ) from None
    return path
