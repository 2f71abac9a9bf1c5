"""Telling delivery about a new publish: an HTTP POST or an MQTT message.

The event is a ``PublishEvent`` (``ajour_build.core.wire``): ``{image, tag, digest, version,
target}``. Delivery also learns of pushes
from the registry's own notifications (``notifications.endpoints``); this event covers
layout directories and registries without notifications.

Over HTTP the event carries ``Authorization: Bearer <token>`` when a token is given: the
worker's events token, which ``release`` takes from ``AJOUR_DELIVERY_EVENTS_TOKEN`` (the
variable the worker reads too). It never appears in an error.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from ajour_build.core.errors import PublishError
from ajour_build.core.wire import EVENTS_TOKEN_ENV, PublishEvent
from ajour_build.publish.publisher import Published


def event(published: Published) -> PublishEvent:
    return PublishEvent(
        image=published.reference.split("@", 1)[0],
        tag=published.tags[-1] if published.tags else published.version,
        digest=published.digest,
        version=published.version,
        target=published.target,
    )


def send(url: str, published: Published, timeout: float = 5.0, token: str = "") -> None:
    body = event(published).model_dump_json().encode()
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, reason = _post(url, body, headers, timeout)
        if not 200 <= status < 300:
            hint = f"; set {EVENTS_TOKEN_ENV} to the worker's events token" if status == 401 else ""
            raise PublishError(
                f"published, but notifying {url} failed: HTTP Error {status}: {reason}{hint}"
            )
        return
    if parts.scheme == "mqtt":
        _mqtt(
            parts.hostname or "127.0.0.1", parts.port or 1883, parts.path.lstrip("/"), body, timeout
        )
        return
    raise PublishError(f"notify URL {url!r} must be http(s):// or mqtt://host:port/topic")


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    """POST ``body``; (status, reason). ``timeout`` bounds the whole exchange: when it is up,
    the socket is shut down, so a server that answers a byte at a time cannot hold it."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = kind(parts.hostname or "", parts.port, timeout=timeout)
    except ValueError as exc:
        raise PublishError(f"published, but notifying {url} failed: {exc}") from None
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        if conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(timeout, cut)
    timer.start()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body, headers)
        response = conn.getresponse()
        response.read(1024)
        status = (response.status, response.reason)
    except (http.client.HTTPException, OSError) as exc:
        if not expired.is_set():
            raise PublishError(f"published, but notifying {url} failed: {exc}") from None
    finally:
        timer.cancel()
        conn.close()
    if expired.is_set():  # cut off: what was read, if anything, is not an answer
        raise PublishError(f"published, but notifying {url} failed: no answer within {timeout:g}s")
    return status


def _mqtt(host: str, port: int, topic: str, body: bytes, timeout: float) -> None:
    """Publish with QoS 1 and wait for the broker's PUBACK; ``timeout`` bounds it all."""
    try:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
    except ImportError:
        raise PublishError(
            "mqtt:// notifications need the mqtt extra (pip install ajour[mqtt])"
        ) from None
    if not topic:
        raise PublishError("the MQTT notify URL needs a topic: mqtt://host:port/<topic>")
    where = f"published, but the MQTT notification to {host}:{port} failed"
    end = time.monotonic() + timeout
    refused: list[str] = []
    connected = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect_timeout = timeout
    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=max(5, int(timeout) + 5))
    except OSError as exc:
        raise PublishError(f"{where}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(max(0.0, end - time.monotonic())):
            raise PublishError(f"{where}: no answer within {timeout:g}s")
        if refused:
            raise PublishError(f"{where}: the broker refused the connection ({refused[0]})")
        sent = client.publish(topic, body, qos=1)
        try:
            sent.wait_for_publish(max(0.0, end - time.monotonic()))
        except (RuntimeError, ValueError) as exc:  # the connection went away meanwhile
            raise PublishError(f"{where}: {exc}") from None
        if not sent.is_published():
            raise PublishError(f"{where}: no acknowledgement within {timeout:g}s")
    finally:
        client.disconnect()
        client.loop_stop()
