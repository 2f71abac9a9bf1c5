"""The MQTT transport: statuses in on a topic template, commands out on another.

Workers share the load through a shared subscription (``$share/<group>/…``): the broker
hands each status to one worker. Devices publish to ``ajour/<app>/<device>/dfu`` and read
``ajour/<app>/<device>/dfu/cmd`` by default; the broker authenticates them (see
:mod:`delivery.broker`). TCP_NODELAY is set: without it a QoS 1 round trip takes 40-90 ms.

``mqtts://`` connects with TLS: the broker's certificate is verified against a CA file (or
the system's CAs) and must name the host of the URL; a client certificate is optional.
In Drogue mode a CloudEvent is answered only for the application whose ``app/<app>`` topic
it came on: one that claims another application is refused (counted, and logged at most
once a minute, so a flood cannot flood the log).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from delivery.errors import DeliveryError
from delivery.log_limit import RateLimitedLog as RateLimitedLog  # also its old home
from delivery.worker import Worker

log = logging.getLogger("delivery.mqtt")
_PLACES = ("{app}", "{device}")
_LEVEL = re.compile(r"[^/+#\x00]+")
PORTS: Final = {"mqtt": 1883, "mqtts": 8883}
REFUSAL_LOG_INTERVAL: Final = 60.0
TOPIC_CACHE: Final = 65536  # status topics remembered (one per recently heard device)


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho drops such a socket without closing it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


@dataclass(frozen=True)
class MqttTls:
    """TLS to the broker, for ``mqtts://`` URLs: the CA file that signed the broker's
    certificate (None: the system's CAs) and an optional client certificate and key. The
    broker's certificate must name the URL's host; nothing turns that check off."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        if self.key_file is not None and self.cert_file is None:
            raise DeliveryError("MQTT TLS: a client key (--mqtt-key) needs --mqtt-cert too")
        context = ssl.create_default_context()  # verifies the chain and the host name
        context.sslsocket_class = _ClosingSSLSocket
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise DeliveryError(
                    f"MQTT TLS: cannot use the CA file {str(self.ca_file)!r} (--mqtt-ca):"
                    f" {_reason(exc)}; expected a PEM file of CA certificates"
                ) from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(
                    str(self.cert_file), str(self.key_file) if self.key_file else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise DeliveryError(
                    f"MQTT TLS: cannot use the client certificate {str(self.cert_file)!r}"
                    f" (--mqtt-cert) with key {str(self.key_file or self.cert_file)!r}"
                    f" (--mqtt-key): {_reason(exc)}; expected PEM files, the key unencrypted"
                    " and matching the certificate"
                ) from None
        return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


@dataclass(frozen=True)
class BrokerUrl:
    """``mqtt[s]://[user:password@]host[:port]``, parsed."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    def __repr__(self) -> str:  # the password never reaches a log
        scheme = "mqtts" if self.tls else "mqtt"
        return f"BrokerUrl({scheme}://{self.host}:{self.port}, username={self.username!r})"

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if scheme not in PORTS or not parts.hostname or port == -1:
        shown = f"{scheme}://{parts.hostname or ''}" if scheme else repr(url[:40])
        raise DeliveryError(
            f"MQTT URL {shown}…: expected mqtt://[user:password@]host[:port], or mqtts:// for TLS"
        )
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return BrokerUrl(parts.hostname, port or PORTS[scheme], user, password, scheme == "mqtts")


def make_client(url: str, tls: MqttTls | None = None, client_id: str = "") -> mqtt.Client:
    """A paho client for ``url``, with its credentials and, for ``mqtts://``, TLS."""
    broker = parse_broker_url(url)
    if tls is not None and not broker.tls:
        raise DeliveryError(
            f"MQTT TLS options (--mqtt-ca/--mqtt-cert/--mqtt-key) need an mqtts:// broker URL;"
            f" got {broker.address}: use mqtts://{broker.host}:<TLS port>"
        )
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set_context((tls or MqttTls()).context())
    return client


def connect(client: mqtt.Client, url: str, keepalive: int = 30) -> BrokerUrl:
    """Connect (the TLS handshake happens here), with errors that say what to fix."""
    broker = parse_broker_url(url)
    where = broker.address
    try:
        client.connect(broker.host, broker.port, keepalive=keepalive)
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(
            f"the MQTT broker at {where} failed TLS verification: {exc.verify_message}; check"
            f" that --mqtt-ca is the CA that signed the broker's certificate and that the"
            f" certificate names {broker.host!r} (subjectAltName)"
        ) from None
    except ssl.SSLError as exc:
        raise DeliveryError(
            f"the TLS handshake with the MQTT broker at {where} failed: {_reason(exc)}; is it"
            " a TLS listener, and does it want a client certificate (--mqtt-cert/--mqtt-key)?"
        ) from None
    except OSError as exc:
        raise DeliveryError(
            f"cannot reach the MQTT broker at {where}: {_reason(exc)}; is the broker running"
            " and listening there? start it, or fix the host and port of --mqtt"
        ) from None
    return broker


@dataclass
class MqttSettings:
    url: str = "mqtt://127.0.0.1:1883"
    status_topic: str = "ajour/{app}/{device}/dfu"
    command_topic: str = "ajour/{app}/{device}/dfu/cmd"
    group: str = "ajour"  # shared subscription group; "" subscribes directly
    qos: int = 1
    # "drogue": Drogue Cloud's MQTT integration instead: CloudEvents (JSON, structured mode)
    # on app/<application>, commands to command/<application>/<device>/dfu
    mode: str = "ajour"
    applications: tuple[str, ...] = ()
    tls: MqttTls | None = None  # for mqtts:// (None: the system's CAs, no client certificate)


class TopicTemplate:
    """``ajour/{app}/{device}/dfu`` ↔ topics, each placeholder one whole level."""

    def __init__(self, template: str) -> None:
        levels = template.split("/")
        if (
            levels.count("{app}") != 1
            or levels.count("{device}") != 1
            or any(
                ("{" in lv or "+" in lv or "#" in lv) and lv not in ("{app}", "{device}")
                for lv in levels
            )
        ):
            raise DeliveryError(
                f"topic template {template!r} needs {{app}} and {{device}} once each, each a"
                " whole topic level, and no wildcards"
            )
        self.template = template
        self._size = len(levels)
        self._fixed = tuple((i, lv) for i, lv in enumerate(levels) if lv not in _PLACES)
        self._app, self._device = levels.index("{app}"), levels.index("{device}")

    @property
    def wildcard(self) -> str:
        return self.template.replace("{app}", "+").replace("{device}", "+")

    def parse(self, topic: str) -> tuple[str, str] | None:
        """(app, device) of a topic of this template, each a non-empty level without
        wildcards; None for any other topic."""
        levels = topic.split("/")
        if len(levels) != self._size:
            return None
        for index, literal in self._fixed:
            if levels[index] != literal:
                return None
        app, device = levels[self._app], levels[self._device]
        if not app or not device or "+" in app or "#" in app or "+" in device or "#" in device:
            return None
        return app, device

    def format(self, app: str, device: str) -> str:
        return self.template.replace("{app}", app).replace("{device}", device)


def cloud_event(body: bytes) -> tuple[str, str, bytes] | None:
    """(application, device, CBOR status) from a Drogue ``dfu`` CloudEvent, else None."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("subject") != "dfu":
        return None
    app, device = event.get("application"), event.get("device")
    if not isinstance(app, str) or not isinstance(device, str):
        return None
    data = event.get("data_base64")
    if not isinstance(data, str):
        return None  # Drogue's JSON-encoded statuses are not served: devices send CBOR
    try:
        return app, device, base64.b64decode(data, validate=True)
    except ValueError:
        return None


def connect_args(url: str) -> tuple[str, int, str | None, str | None]:
    broker = parse_broker_url(url)
    return broker.host, broker.port, broker.username, broker.password


def nodelay(client: mqtt.Client) -> None:
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttTransport:
    def __init__(self, worker: Worker, settings: MqttSettings, client_id: str = "") -> None:
        self.worker = worker
        self.settings = settings
        self.status = TopicTemplate(settings.status_topic)
        self.command = TopicTemplate(settings.command_topic)
        self.broker = parse_broker_url(settings.url)
        self.client = make_client(
            settings.url, settings.tls, client_id or f"ajour-worker-{uuid.uuid4().hex[:8]}"
        )
        self._refusals = RateLimitedLog(log, REFUSAL_LOG_INTERVAL)
        self._drogue = settings.mode == "drogue"
        self._qos = settings.qos
        # topic -> (app, device, reply topic): a device sends hundreds of statuses on one
        # topic; parsing and formatting it once saves ~1 µs a status (bounded, C-level LRU)
        self._route: Callable[[str], tuple[str, str, str] | None] = functools.lru_cache(
            maxsize=TOPIC_CACHE
        )(self._status_route)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.ready = threading.Event()  # set when the broker has answered the subscriptions

    @property
    def subscriptions(self) -> list[str]:
        filters = (
            [f"app/{app}" for app in self.settings.applications]
            if self.settings.mode == "drogue"
            else [self.status.wildcard]
        )
        group = self.settings.group
        return [f"$share/{group}/{f}" if group else f for f in filters]

    @property
    def subscription(self) -> str:
        return ", ".join(self.subscriptions)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connection refused: %s", reason)
            return
        nodelay(client)
        client.subscribe([(topic, self.settings.qos) for topic in self.subscriptions])

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: int, _codes: Any, _p: Any) -> None:
        # only now does the broker hand us statuses: one published before is dropped
        self.ready.set()

    def _status_route(self, topic: str) -> tuple[str, str, str] | None:
        names = self.status.parse(topic)
        if names is None:
            return None
        return names[0], names[1], self.command.format(*names)

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if self._drogue:
            parsed = cloud_event(bytes(message.payload))
            if parsed is None:
                self.worker.counters.add("foreign_event")
                return
            app, device, payload = parsed
            subscribed = self._drogue_app(message.topic)
            if app != subscribed:
                self.worker.counters.add("application_mismatch")
                self._refusals.warning(
                    "refused a CloudEvent on topic %r: it claims application %r, but only"
                    " %r may be answered from that topic (a device of one application"
                    " cannot speak for another); not answered",
                    message.topic[:100],
                    app[:64],
                    subscribed,
                )
                return
            if not _LEVEL.fullmatch(device):
                self.worker.counters.add("foreign_event")
                return  # not a topic level: the command topic would be someone else's
            reply_topic = f"command/{app}/{device}/dfu"
        else:
            route = self._route(message.topic)
            if route is None:
                self.worker.counters.add("foreign_topic")
                return
            app, device, reply_topic = route
            payload = bytes(message.payload)
        try:
            reply = self.worker.handle(app, device, payload)
        except Exception:  # a daemon never dies on one message
            log.exception("handling %s failed", message.topic)
            self.worker.counters.add("internal_error")
            return
        if reply is not None:
            client.publish(reply_topic, reply, qos=self._qos)

    def _drogue_app(self, topic: str) -> str | None:
        """The application of a Drogue integration topic ``app/<app>`` we subscribed to."""
        prefix, _, app = topic.partition("/")
        return app if prefix == "app" and app in self.settings.applications else None

    def start(self, timeout: float = 10.0) -> None:
        connect(self.client, self.settings.url)
        self.client.loop_start()
        if not self.ready.wait(timeout):
            self.stop()
            hint = (
                " (does it want a client certificate: --mqtt-cert/--mqtt-key?)"
                if self.broker.tls
                else " (if it is a TLS listener, use mqtts://)"
            )
            raise DeliveryError(
                f"the MQTT broker at {self.broker.address} did not accept the worker within"
                f" {timeout:g} s: check its log, the worker's credentials and ACL{hint}"
            )

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
