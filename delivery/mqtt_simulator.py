"""Simulated devices over MQTT: status out on the status topic, command in on the command topic.

Two ways to connect:

* ``gateway``: one connection for all devices, with the URL's credentials (a gateway, such
  as drgdfu, speaking for its devices).
* ``device``: one connection per device, each logged in as ``<device>@<app>`` with its own
  password, on its own topics only: the users and ACL ``ajour-delivery broker-config``
  writes.

**Several broker nodes** (several URLs): devices are spread evenly over them (device ``i``
starts on node ``i mod N``; in ``gateway`` mode one gateway connection per node). A
connection that is lost moves to the next node of the list, subscribes again and sends the
status that was waiting again: the old node's answer, if any, went to a connection that is
gone. A command that arrives with no status waiting is counted as a duplicate and not
applied; with ``correlate`` each status carries a new ``correlation_id``, and a command that
echoes another one (a late second answer to an earlier status) is a duplicate too. Each
connection takes only the commands of the devices it speaks for.

Nothing waits in silence: a connection the broker refuses ends its devices at once with the
broker's reason, and a device whose status gets no answer within ``answer_timeout`` seconds
ends with what can cause that (the worker ignores devices it does not know; a broker drops
what its ACL denies). ``timeout`` bounds the whole run.

With ``until``, devices poll on as real ones do: a device in sync with another version
polls again (after the ``Sync``'s poll, capped by ``wait_cap``) until it runs ``until``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Literal

import paho.mqtt.client as mqtt

from delivery.errors import DeliveryError
from delivery.mqtt import MqttTls, TopicTemplate, parse_broker_url
from delivery.mqtt_simulator_link import DeviceRun, Link
from delivery.poll_schedule import PollSchedule
from delivery.protocol import Sync, Wait, decode_command, encode_status
from delivery.simulator import DeviceResult, Failures, Password

Connection = Literal["gateway", "device"]
CONNECTIONS: tuple[Connection, ...] = ("gateway", "device")


class _Run:
    """The devices of one simulation, their connections, and when it is over. With
    ``keep_polling`` seconds, a synced device sends its status again after its ``Sync``'s
    poll (capped by ``wait_cap``, as over HTTP) until that long after it started."""

    def __init__(
        self,
        app: str,
        devices: dict[str, DeviceRun],
        topics: tuple[str, str],
        qos: int,
        wait_cap: float,
        tls: MqttTls | None,
        correlate: bool = False,
        keep_polling: float = 0.0,
        until: bytes | None = None,
    ) -> None:
        self.app, self.devices, self.qos, self.wait_cap = app, devices, qos, wait_cap
        self.tls, self.correlate, self.keep_polling = tls, correlate, keep_polling
        self.until = until
        self.status_t, self.command_t = TopicTemplate(topics[0]), TopicTemplate(topics[1])
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.later: PollSchedule[DeviceRun] = PollSchedule(self.send)

    def end(self, device: DeviceRun, error: str = "") -> None:
        """Under the lock: the device is synced, gone, or failed with ``error``."""
        if device.finished is None:
            device.finished, device.error, device.asked = time.perf_counter(), error, None
            if all(d.finished is not None for d in self.devices.values()):
                self.done.set()

    def send(self, device: DeviceRun) -> None:
        """Publish the device's status; without a connection it waits for the next one."""
        with self.lock:
            if device.finished is not None or device.link is None:
                return
            device.asked = time.perf_counter()
            client = device.link.client
            if client is None:
                return  # a failover is under way: the new connection sends it
            if self.correlate:
                device.sim.correlation_id = device.statuses % 2**32
            payload = encode_status(device.sim.status())
            device.wire += len(payload)
            device.statuses += 1
        client.publish(self.status_t.format(self.app, device.name), payload, qos=self.qos)

    def on_message(self, client: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        names = self.command_t.parse(message.topic)
        device = self.devices.get(names[1]) if names is not None else None
        if device is None or names is None or names[0] != self.app:
            return
        command = decode_command(bytes(message.payload))
        with self.lock:
            if device.finished is not None or device.link is None:
                return
            if device.link.client is not client:
                return  # another gateway's device: that connection takes it
            if device.asked is None or (
                self.correlate and command.correlation_id != device.sim.correlation_id
            ):
                device.duplicates += 1  # a second answer to one status: never applied
                return
            device.asked = None
            device.wire += len(message.payload)
            device.sim.apply(command)
            device.steps += 1
            polled = time.perf_counter() - device.started
            arrived = self.until is None or device.sim.version == self.until
            if device.sim.vanished or (
                device.sim.synced and arrived and polled >= self.keep_polling
            ):
                self.end(device)
                return
        if isinstance(command, (Wait, Sync)):
            self.later.after(min(float(command.poll or 1), self.wait_cap), device)
        else:
            self.send(device)

    def finish(self) -> None:
        """At the end of the run: devices in sync are done (one still polling too), unless
        they wait for ``until``."""
        with self.lock:
            for device in self.devices.values():
                if device.sim.synced and (self.until is None or device.sim.version == self.until):
                    self.end(device)

    def unanswered(self, answer_timeout: float, hint: str) -> None:
        """End each device whose status waited longer than ``answer_timeout`` seconds on a
        connection that could answer it (lost, or not subscribed yet after a failover: the
        status goes out again once it is, and the wait starts again then)."""
        now = time.perf_counter()
        with self.lock:
            for device in self.devices.values():
                if device.link is not None and not device.link.ready and answer_timeout > 0:
                    continue
                if device.asked is not None and now - device.asked >= answer_timeout:
                    topic = self.status_t.format(self.app, device.name)
                    self.end(
                        device,
                        f"no answer within {now - device.asked:.0f} s to its status on {topic}: the"
                        f" worker ignores a device it does not know (is {device.name} a device"
                        f" of {self.app} in the fleet it serves?) and the broker drops what its"
                        f" ACL denies{hint}",
                    )

    def supervise(self, links: list[Link]) -> None:
        """Move each lost connection to another node (the old one is down)."""
        now = time.perf_counter()
        for link in links:
            if link.lost and now >= link.retry_at and not self.done.is_set():
                link.failover()


def _links(run: _Run, urls: list[str], connection: Connection, password: Password) -> list[Link]:
    """The connections: one gateway per node, or one per device; devices spread evenly."""
    names = list(run.devices)
    if connection == "gateway":
        groups = [[run.devices[n] for n in names[i :: len(urls)]] for i in range(len(urls))]
        return [Link(run, urls, i, group) for i, group in enumerate(groups) if group]
    links = []
    for i, name in enumerate(names):
        link = Link(run, urls, i, [run.devices[name]])
        link.user = f"{name}@{run.app}"
        link.secret = password(name) if callable(password) else password
        links.append(link)
    return links


def simulate_mqtt(
    url: str | Sequence[str],
    app: str,
    names: list[str],
    version: bytes,
    mtu: int | None,
    status_topic: str = "ajour/{app}/{device}/dfu",
    command_topic: str = "ajour/{app}/{device}/dfu/cmd",
    qos: int = 1,
    timeout: float = 120.0,
    wait_cap: float = 0.05,
    tls: MqttTls | None = None,
    failures: Failures | None = None,
    connection: Connection = "gateway",
    password: Password = None,
    answer_timeout: float = 10.0,
    correlate: bool = False,
    keep_polling: float = 0.0,
    until: bytes | None = None,
) -> list[DeviceResult]:
    """Simulate devices ``names`` until each is in sync, failed, or ``timeout`` has passed.

    ``url``: the broker, or the nodes of several (devices spread evenly, a lost connection
    moves to the next node). ``connection``: one ``gateway`` connection per node with the
    URL's credentials, or one per ``device`` as ``<device>@<app>`` with ``password``
    (shared, or a function of the device's name). ``mqtts://`` URLs connect with TLS
    (``tls``: CA file, client certificate). ``correlate``: number the statuses
    (``correlation_id``) to catch an answer to an earlier one; each status is then new to
    the worker's reply memo. With ``keep_polling`` seconds, synced devices go on polling
    like real devices until that long after they started (the run lasts up to the longer of
    the two). ``until``: devices keep polling until they run that version. No broker to
    reach is a DeliveryError."""
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise DeliveryError("simulate over MQTT needs a broker URL (--mqtt)")
    for each in urls:
        parse_broker_url(each)  # a malformed URL fails before any connection
    failures = failures or Failures()
    devices = {n: DeviceRun(n, failures.device(n, version, mtu)) for n in names}
    run = _Run(app, devices, (status_topic, command_topic), qos, wait_cap, tls, correlate,
               keep_polling, until)  # fmt: skip
    links = _links(run, urls, connection, password)
    limit = max(timeout, keep_polling)
    option = "--timeout" if limit == timeout else "--keep-polling"
    hint = ""
    try:
        for link in links:
            link.open()
        if connection == "gateway":
            hint = "; with the users and ACL of broker-config use --mqtt-connection device"
            for link in links:
                if not link.subscribed.wait(10):
                    raise DeliveryError(
                        f"the MQTT broker at {parse_broker_url(link.url).address} did not"
                        " accept the gateway within 10 s"
                    )
            if not run.done.is_set():
                time.sleep(0.2)  # let the subscriptions settle before the first status
                for device in devices.values():
                    run.send(device)
        deadline = time.perf_counter() + limit
        while not run.done.wait(0.1) and time.perf_counter() < deadline:
            run.supervise(links)
            run.unanswered(answer_timeout, hint)
        run.finish()
        run.unanswered(0.0, hint)  # at the deadline: say so of a status still unanswered
    finally:
        run.later.stop()
        for link in links:
            link.close()
    now = time.perf_counter()
    return [
        DeviceResult(
            app,
            d.name,
            version.decode(errors="replace"),
            d.sim.version.decode(errors="replace"),
            d.sim.synced,
            d.steps,
            d.sim.bytes_received,
            d.sim.waits,
            d.sim.swaps_rejected,
            (d.finished or now) - d.started,
            d.error or ("" if d.sim.synced else f"not in sync after {limit:g} s ({option})"),
            d.sim.patch_bytes,
            d.wire,
            d.sim.patch_failed,
            d.statuses,
            d.duplicates,
            d.link.failovers if d.link else 0,
        )
        for d in devices.values()
    ]
