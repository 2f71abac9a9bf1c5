"""The ``ajour-delivery gateway`` command (:mod:`delivery.gateway` is the relay)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click

from delivery.errors import DeliveryError
from delivery.options import mqtt_tls_options, mqtt_tls_settings

PASSWORD_ENV = "AJOUR_DEVICE_PASSWORD"


def _password(password: str | None, password_file: Path | None) -> str | None:
    if password is not None and password_file is not None:
        raise DeliveryError(
            f"give the password once: --password (or {PASSWORD_ENV}) or --password-file"
        )
    if password_file is None:
        return password
    try:
        return password_file.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeliveryError(
            f"cannot read the device password from {str(password_file)!r} (--password-file):"
            f" {exc}; expected a UTF-8 text file holding the password"
        ) from None


@click.command(
    epilog="\b\nExample:\n  AJOUR_DEVICE_PASSWORD=… ajour-delivery gateway"
    " --uart tcp:127.0.0.1:4321 --http http://127.0.0.1:8081 --application blinky"
    " --device dev-1\n"
)
@click.option(
    "--uart",
    required=True,
    help="The device's UART: tcp:HOST:PORT (QEMU -serial tcp:HOST:PORT,server=on,nodelay=on),"
    " unix:PATH (-serial unix:PATH,server=on) or tty:PATH (a serial port, e.g."
    " tty:/dev/ttyUSB0: raw 8N1, no flow control).",
)
@click.option(
    "--baud",
    type=int,
    help="tty:PATH only: the serial port's rate in bits per second [default: 115200].",
)
@click.option("--http", "http_url", help="The worker, e.g. http://127.0.0.1:8081 (POST /v1/dfu).")
@click.option("--mqtt", "mqtt_url", help="Or the broker, e.g. mqtt://127.0.0.1:1883 (mqtts: TLS).")
@mqtt_tls_options
@click.option(
    "--status-topic",
    default="ajour/{app}/{device}/dfu",
    show_default=True,
    help="MQTT: where the device's statuses go (the worker's --status-topic).",
)
@click.option(
    "--command-topic",
    default="ajour/{app}/{device}/dfu/cmd",
    show_default=True,
    help="MQTT: where the worker answers (the worker's --command-topic).",
)
@click.option("--application", required=True, help="The device's application.")
@click.option("--device", required=True, help="The device's name in the fleet.")
@click.option(
    "--password",
    envvar=PASSWORD_ENV,
    help=f"The device's password (or {PASSWORD_ENV}; prefer it or --password-file: a command"
    " line is visible to other users).",
)
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the device's password from this file.",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for a command.")
@click.option(
    "--log-interval",
    default=10.0,
    show_default=True,
    help="Seconds between two log lines about the same trouble (worker down, bad frames).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON on exit.")
def gateway(
    uart: str,
    baud: int | None,
    http_url: str | None,
    mqtt_url: str | None,
    mqtt_ca: Path | None,
    mqtt_cert: Path | None,
    mqtt_key: Path | None,
    status_topic: str,
    command_topic: str,
    application: str,
    device: str,
    password: str | None,
    password_file: Path | None,
    timeout: float,
    log_interval: float,
    as_json: bool,
) -> None:
    """Relay one device's serial line (its UART) to the worker until interrupted.

    The device sends frames (00, then COBS of the CBOR status and its CRC-32, then 00); each
    is forwarded as the device, and the command is written back the same way. A frame whose
    CRC is wrong is dropped and counted (bad_crc), never forwarded.
    """
    from delivery.gateway import Gateway, HttpUplink, MqttUplink, Uplink
    from delivery.uart import UartAddress

    if bool(http_url) == bool(mqtt_url):
        raise DeliveryError("give exactly one of --http URL or --mqtt URL")
    address = UartAddress.parse(uart, baud)
    secret = _password(password, password_file)
    uplink: Uplink
    if http_url:
        uplink = HttpUplink(http_url, application, device, secret, timeout)
    else:
        assert mqtt_url is not None
        tls = mqtt_tls_settings(mqtt_url, mqtt_ca, mqtt_cert, mqtt_key)
        uplink = MqttUplink(
            mqtt_url, application, device, secret, status_topic=status_topic,
            command_topic=command_topic, timeout=timeout, tls=tls,
        )  # fmt: skip
    relay = Gateway(address, uplink, log_interval=log_interval)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    where = f"{address} at {address.baud} baud" if address.tty else str(address)
    click.echo(f"relaying {where} for {device}@{application}", err=True)
    try:
        relay.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        relay.uplink.close()
    stats = relay.stats.as_dict()
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        click.echo(", ".join(f"{k} {v}" for k, v in stats.items()), err=True)
