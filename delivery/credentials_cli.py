"""The ``ajour-delivery`` commands that make device credentials usable: ``broker-config``
(mosquitto's users, ACL and configuration, from the fleet) and ``hash-password`` (a hash for
``spec.credentials``). :mod:`delivery.tools` lists them with the other commands."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ajour_build.core.fleet import load_fleet
from delivery.options import FLEET


@click.command(
    "broker-config",
    epilog="\b\nExamples:\n  ajour-delivery broker-config --fleet fleet/ --out /etc/ajour\n"
    "  ajour-delivery broker-config --fleet fleet/ --out /etc/mosquitto/ajour --owner mosquitto"
    " \\\n    --persistence-dir /var/lib/mosquitto --tls-cert broker.pem --tls-key broker.key\n",
)
@FLEET
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory to write the password file, the ACL and mosquitto.conf to.",
)
@click.option(
    "--worker-user", default="ajour-worker", show_default=True, help="The worker's broker user."
)
@click.option(
    "--worker-password",
    envvar="AJOUR_MQTT_WORKER_PASSWORD",
    required=True,
    help="The worker's broker password (or AJOUR_MQTT_WORKER_PASSWORD).",
)
@click.option(
    "--owner",
    help="Hand the files to this user and its group, mode 0640, and run mosquitto as it"
    " (its `user` in mosquitto.conf).",
)
@click.option("--group", help="Hand the files to this group, mode 0640.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="mosquitto.conf: the listener's port [8883 with --tls-cert, else 1883].",
)
@click.option(
    "--bind",
    help="mosquitto.conf: the listener's address (IP or host name) [every interface].",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="mosquitto.conf: TLS on the listener with this certificate chain (PEM).",
)
@click.option(
    "--tls-key",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="mosquitto.conf: the private key (PEM) of --tls-cert; only its path is written.",
)
@click.option(
    "--tls-client-ca",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="mosquitto.conf: devices must also present a certificate this CA (PEM) signed.",
)
@click.option(
    "--max-queued-messages",
    type=click.IntRange(min=0),
    help="mosquitto.conf: QoS 1 messages queued per client (0: no limit)"
    " [2 per fleet device, at least 1000].",
)
@click.option(
    "--max-inflight-messages",
    type=click.IntRange(min=0),
    help="mosquitto.conf: QoS 1 messages on their way to a client, unacknowledged (0: no"
    " limit) [100].",
)
@click.option(
    "--persistence-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="mosquitto.conf: where mosquitto saves its database; made for --owner/--group if"
    " missing [OUT/data].",
)
@click.option(
    "--no-persistence",
    is_flag=True,
    help="mosquitto.conf: keep nothing across restarts (persistence false).",
)
def broker_config(
    fleet_paths: tuple[Path, ...],
    out_dir: Path,
    worker_user: str,
    worker_password: str,
    owner: str | None,
    group: str | None,
    port: int | None,
    bind: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
    max_queued_messages: int | None,
    max_inflight_messages: int | None,
    persistence_dir: Path | None,
    no_persistence: bool,
) -> None:
    """Write a mosquitto password file, ACL and mosquitto.conf: each device only on its own
    topics, the worker's queue sized for the fleet."""
    from delivery.broker import broker_files, ownership, unreachable, write
    from delivery.broker_conf import (
        INFLIGHT,
        BrokerConf,
        checked_bind,
        checked_tls,
        render,
        write_conf,
    )

    who = ownership(owner, group)
    checked_tls(tls_cert, tls_key, tls_client_ca)
    conf = BrokerConf(
        port=port,
        bind=checked_bind(bind),
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        max_queued_messages=max_queued_messages,
        max_inflight_messages=INFLIGHT if max_inflight_messages is None else max_inflight_messages,
        persistence_dir=persistence_dir,
        persistence=not no_persistence,
    )
    fleet = load_fleet(list(fleet_paths))
    text = render(conf, len(fleet.devices), out_dir, who.user)  # refused before any file
    files = broker_files(fleet, worker_user, worker_password)
    passwd, acl = write(files, out_dir, who)
    written = write_conf(text, conf, out_dir, who)
    click.echo(
        f"{files.devices} devices; password_file {passwd}; acl_file {acl}; config {written};"
        f" {who.describe()}"
    )
    for name, reason in files.skipped:
        click.echo(f"skipped {name}: {reason}", err=True)
    blocked = unreachable(out_dir, who)
    if blocked is not None:
        click.echo(
            f"warning: {owner or group} cannot enter {blocked}, so mosquitto running as it"
            " cannot read the files; write them to a directory it can reach",
            err=True,
        )


@click.command(
    "hash-password",
    epilog="\b\nExample:\n  ajour-delivery hash-password --username dev-1 < password.txt\n",
)
@click.option(
    "--scheme",
    type=click.Choice(["bcrypt", "sha512"]),
    default="bcrypt",
    show_default=True,
    help="bcrypt ($2b$) or sha512-crypt ($6$), as Drogue Cloud verifies them.",
)
@click.option("--cost", type=int, default=12, show_default=True, help="bcrypt cost (4..31).")
@click.option("--rounds", type=int, default=5000, show_default=True, help="sha512-crypt rounds.")
@click.option("--username", help="Make a user entry {user: {username, password}}.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
def hash_password(scheme: str, cost: int, rounds: int, username: str | None, as_json: bool) -> None:
    """Hash a device password for spec.credentials; it is read from stdin or a prompt.

    The password is never taken from the command line, where other users can see it.
    """
    import sys

    import yaml

    from delivery.device_auth import hash_password as make_hash

    if sys.stdin.isatty():
        password = click.prompt(
            "Device password", hide_input=True, confirmation_prompt=True, err=True
        )
    else:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    hashed = make_hash(password, "sha512" if scheme == "sha512" else "bcrypt", cost, rounds)
    secret = {scheme: hashed}
    entry = (
        {"pass": secret}
        if username is None
        else {"user": {"username": username, "password": secret}}
    )
    section = {"credentials": {"credentials": [entry]}}
    if as_json:
        click.echo(json.dumps(section, indent=2))
    else:
        click.echo(yaml.safe_dump(section, sort_keys=False, default_flow_style=False), nl=False)
