"""``ajour-delivery gateway``: one device's serial line to the worker.

It opens the device's UART (:mod:`delivery.uart`: QEMU's as a TCP server or a Unix socket,
or a real serial port), reads its status frames (:mod:`delivery.frames`: COBS with a CRC-32
between ``00`` markers), forwards each to the worker (``POST /v1/dfu`` with the device's
password, or MQTT on its status topic as the device's own broker user) and writes the command
back as a frame. Bad input never stops it: a garbled frame (its CRC wrong) is counted,
logged and dropped, never forwarded, and the next marker resynchronises; a status the worker
refuses gets no answer, and so
does every status while the worker cannot be reached (the device times out and sends it
again); that is logged at most once per ``log_interval``. When the line closes (QEMU exits:
a power cycle; a USB serial adapter unplugged), it opens it again until stopped.
"""

from __future__ import annotations

import base64
import http.client
import logging
import queue
import select
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlencode, urlsplit

from delivery.errors import DeliveryError
from delivery.frames import MAX_FRAME, FrameReader, encode_frame
from delivery.log_limit import RateLimitedLog
from delivery.uart import Line, UartAddress

if TYPE_CHECKING:
    from delivery.mqtt import MqttTls

log = logging.getLogger("delivery.gateway")


class UplinkError(Exception):
    """A status got no command: ``kind`` is ``down`` (worker unreachable or failing),
    ``refused`` (the device's credentials) or ``rejected`` (the status itself)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class Uplink(Protocol):
    def exchange(self, status: bytes) -> bytes: ...

    def close(self) -> None: ...


@dataclass
class HttpUplink:
    """``POST /v1/dfu`` as the device, over one keep-alive connection."""

    url: str
    application: str
    device: str
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            raise DeliveryError(
                f"--http expects http://HOST[:PORT] of the worker, got {self.url!r}"
            )
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, self.timeout)
        query = {"application": self.application, "device": self.device, "ct": "30"}
        self._path = "/v1/dfu?" + urlencode(query)
        self._headers = {"Content-Type": "application/cbor"}
        if self.password is not None:
            user = f"{self.device}@{self.application}:{self.password}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()

    def exchange(self, status: bytes) -> bytes:
        try:
            if self._conn.sock is None:
                self._conn.connect()
                assert self._conn.sock is not None
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn.request("POST", self._path, body=status, headers=self._headers)
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise UplinkError("down", f"{self.url}: {exc or type(exc).__name__}") from None
        if response.status == 200:
            return body
        if response.status in (401, 403):
            raise UplinkError("refused", f"{self.url} refused {self.device}@{self.application}")
        if response.status in (400, 413):
            raise UplinkError("rejected", f"{self.url} rejected the status: {body[:120]!r}")
        raise UplinkError("down", f"{self.url} answered HTTP {response.status}")

    def close(self) -> None:
        self._conn.close()


@dataclass
class GatewayStats:
    connects: int = 0  # connections to the UART (the first, and one after each power cycle)
    frames: int = 0
    replies: int = 0
    bytes_in: int = 0  # from the device, frames and garbage
    bytes_out: int = 0  # command frames written to the device
    bad_crc: int = 0  # pieces between markers that are no frame (CRC wrong): dropped
    oversized: int = 0
    truncated: int = 0
    skipped_bytes: int = 0
    unanswered: int = 0  # the worker was down or failed
    refused: int = 0  # the worker refused the device's credentials
    rejected: int = 0  # the worker refused the status (garbled CBOR)
    late: int = 0  # replies dropped: the device had sent its status again meanwhile

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Gateway:
    """Relays one device's frames to ``uplink`` until :meth:`stop` (or ``run``'s event)."""

    def __init__(
        self,
        uart: UartAddress,
        uplink: Uplink,
        *,
        log_interval: float = 10.0,
        max_frame: int = MAX_FRAME,
        reconnect_delay: float = 0.05,
        unreachable_log: float = 5.0,
    ) -> None:
        self.uart, self.uplink = uart, uplink
        self.stats = GatewayStats()
        self.reader = FrameReader(max_frame)
        self.reconnect_delay = reconnect_delay
        self.unreachable_log = unreachable_log  # seconds without the UART before it is logged
        self._stopped = threading.Event()
        self._logs = {
            kind: RateLimitedLog(log, log_interval)
            for kind in ("down", "refused", "rejected", "frames", "uart")
        }

    def stop(self) -> None:
        self._stopped.set()

    def run(self, stop: threading.Event | None = None) -> GatewayStats:
        """Serve the line, connecting again whenever it closes, until stopped."""
        stop = stop or self._stopped
        try:
            while not (stop.is_set() or self._stopped.is_set()):
                line = self._connect(stop)
                if line is None:
                    break
                try:
                    self._serve(line, stop)
                finally:
                    line.close()
                    self.reader.reset()
                    self._sync_counts()
        finally:
            self.uplink.close()
        return self.stats

    def _connect(self, stop: threading.Event) -> Line | None:
        """Connect, retrying; a line that stays unreachable for ``unreachable_log`` seconds
        is logged (a power cycle's short gap is not)."""
        delay, since = self.reconnect_delay, time.monotonic()
        while not (stop.is_set() or self._stopped.is_set()):
            try:
                line = self.uart.connect(timeout=5.0)
            except OSError as exc:
                if time.monotonic() - since >= self.unreachable_log:
                    self._logs["uart"].warning(
                        "cannot connect to the UART at %s: %s", self.uart, exc
                    )
                stop.wait(delay)
                delay = min(delay * 2, 0.25)
                continue
            self.stats.connects += 1
            log.debug("connected to the UART at %s", self.uart)
            return line
        return None

    def _serve(self, line: Line, stop: threading.Event) -> None:
        while not (stop.is_set() or self._stopped.is_set()):
            ready, _, _ = select.select([line], [], [], 0.1)
            if not ready:
                continue
            try:
                data = line.read()
            except OSError:
                return
            if not data:
                return  # QEMU exited (a power cycle) or the line closed
            c = self.reader.counts
            before = c.bad_crc + c.oversized + c.truncated
            for frame in self.reader.feed(data):
                reply = self._forward(frame)
                if reply is None:
                    continue
                if select.select([line], [], [], 0)[0]:
                    self.stats.late += 1  # the device gave up waiting and sent again
                    continue
                out = encode_frame(reply)
                try:
                    line.write(out)
                except OSError:
                    return
                self.stats.replies += 1
                self.stats.bytes_out += len(out)
            if c.bad_crc + c.oversized + c.truncated != before:
                self._logs["frames"].warning(
                    "garbled frames from the device on %s: %d with a bad CRC, %d oversized,"
                    " %d truncated so far; dropped, resynchronised at the next marker",
                    self.uart,
                    c.bad_crc,
                    c.oversized,
                    c.truncated,
                )
            self._sync_counts()

    def _forward(self, status: bytes) -> bytes | None:
        try:
            return self.uplink.exchange(status)
        except Exception as exc:  # an uplink's bug must not stop the relay either
            if not isinstance(exc, UplinkError):
                exc = UplinkError("down", f"{type(exc).__name__}: {exc}")
            if exc.kind == "refused":
                self.stats.refused += 1
                message = "%s; check the device's password (its spec.credentials)"
            elif exc.kind == "rejected":
                self.stats.rejected += 1
                message = "%s (garbled status?); the device gets no answer and sends again"
            else:
                self.stats.unanswered += 1
                message = "the worker did not answer: %s; the device gets no answer and retries"
            self._logs[exc.kind].warning(message, exc)
            return None

    def _sync_counts(self) -> None:
        c = self.reader.counts
        s = self.stats
        s.frames, s.bytes_in, s.bad_crc, s.oversized = c.frames, c.bytes_in, c.bad_crc, c.oversized
        s.truncated, s.skipped_bytes = c.truncated, c.skipped_bytes


class MqttUplink:
    """The device's status and command topics (``delivery.mqtt``'s templates), as the
    device's own broker user ``<device>@<app>`` with its password (the broker's ACL lets it
    use only its own topics: ``ajour-delivery broker-config``). The worker answers a garbled
    status with nothing, so over MQTT that is an unanswered status after ``timeout``."""

    def __init__(
        self,
        url: str,
        application: str,
        device: str,
        password: str | None,
        *,
        status_topic: str = "ajour/{app}/{device}/dfu",
        command_topic: str = "ajour/{app}/{device}/dfu/cmd",
        qos: int = 1,
        timeout: float = 10.0,
        tls: MqttTls | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        from delivery.mqtt import TopicTemplate, make_client, nodelay, parse_broker_url

        self.url, self.timeout, self.qos = url, timeout, qos
        self.address = parse_broker_url(url).address  # without credentials, for messages
        self.status_topic = TopicTemplate(status_topic).format(application, device)
        self.command_topic = TopicTemplate(command_topic).format(application, device)
        self._client = make_client(url, tls, client_id=f"ajour-gateway-{application}-{device}")
        self._client.username_pw_set(f"{device}@{application}", password)
        # The callbacks hold only these, not self: no reference cycle, so the client is freed
        # (and paho closes its socket pair) as soon as the uplink is.
        replies: queue.Queue[bytes] = queue.Queue()
        ready = threading.Event()
        refused: list[str] = [""]
        topic = self.command_topic
        self._replies, self._ready, self._refusal = replies, ready, refused
        self._started = False

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            if getattr(reason, "is_failure", False):
                refused[0] = str(reason)
            else:
                refused[0] = ""
                nodelay(c)
                c.subscribe(topic, qos=qos)
            ready.set()

        def on_subscribe(*_: object) -> None:
            ready.set()

        def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            replies.put(bytes(message.payload))

        self._client.on_connect = on_connect
        self._client.on_subscribe = on_subscribe
        self._client.on_message = on_message

    def exchange(self, status: bytes) -> bytes:
        from delivery.mqtt import connect

        if not self._started:
            try:
                connect(self._client, self.url)
            except DeliveryError as exc:
                raise UplinkError("down", str(exc)) from None
            self._client.loop_start()
            self._started = True
        if not self._ready.wait(self.timeout):
            raise UplinkError(
                "down", f"the MQTT broker at {self.address} did not accept the client"
            )
        if self._refusal[0]:
            raise UplinkError("refused", f"the MQTT broker refused the device: {self._refusal[0]}")
        while not self._replies.empty():  # a late command for an earlier status
            self._replies.get_nowait()
        self._client.publish(self.status_topic, status, qos=self.qos)
        try:
            return self._replies.get(timeout=self.timeout)
        except queue.Empty:
            raise UplinkError(
                "down", f"no command on {self.command_topic} within {self.timeout:g} s"
            ) from None

    def close(self) -> None:
        if self._started:
            self._started = False
            self._client.disconnect()
            self._client.loop_stop()
