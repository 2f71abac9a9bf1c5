"""The CoAP transport (RFC 7252 over UDP): Drogue Cloud's ``POST /v1/dfu``, with Observe.

``POST /v1/dfu?application=<app>&device=<dev>`` with Content-Format 60 (application/cbor)
and the CBOR status as payload is answered ``2.04 Changed`` with the CBOR command, as Drogue
Cloud's coap-endpoint does. The device authenticates as there: CoAP option 4209 carries an
HTTP-style ``Basic base64(<device>@<app>:<password>)`` (or ``<username>:<password>`` of its
credentials with the query naming the device). Errors: wrong Content-Format 4.15, unknown
device or wrong password 4.01 (the same answer after the same kind of work), a status over
4 KiB 4.13 (with Size1), a status that is not embedded-update CBOR 4.00 with a diagnostic.

``GET /v1/dfu?application=&device=`` with Observe (RFC 7641) registers the device for
announcements: the answer is the CBOR byte string of its target version (null without
one), and a notification follows when that changes. Changes are looked for when a publish
event invalidates targets (:meth:`delivery.targets.Targets.subscribe`, so never on the
status path) and every ``observe_poll`` seconds. At most ``max_observers`` observations are
kept; past that a GET is answered without Observe.

Block-wise transfer (RFC 7959) is aiocoap's: a command larger than the client's block size
goes out in Block2 blocks, a status in Block1 blocks is reassembled (but only up to 4 KiB).
aiocoap is imported only when the transport is made (the ``coap`` extra). There is no DTLS:
serve on loopback or behind a DTLS terminating proxy (docs/delivery.md, "CoAP").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ajour_build.core.hosts import is_loopback
from delivery import device_auth
from delivery.coap_site import (
    AUTHORIZATION_OPTION,
    CBOR_FORMAT,
    UNAUTHORIZED,
    UNNAMED,
    Identity,
    make_site,
)
from delivery.errors import DeliveryError
from delivery.protocol import ProtocolError, decode_status
from delivery.worker import Worker

log = logging.getLogger("delivery.coap")
AGAIN_S = 0.25  # the second look after an invalidation

STATS = (
    "requests",
    "changed",
    "bad_format",
    "bad_request",
    "unauthorized",
    "too_large",
    "errors",
    "observers_refused",
    "notifications",
)


@dataclass(frozen=True)
class CoapSettings:
    host: str = "127.0.0.1"
    port: int = 5683
    authenticate: bool = True  # only --insecure-no-auth turns it off, on loopback
    threads: int = 8  # worker.handle may block on a firmware source
    max_observers: int = 1000
    observe_poll: float = 5.0  # seconds between looks at observed devices' targets


class CoapTransport:
    """Serves the worker over CoAP from an event loop in a background thread."""

    def __init__(self, worker: Worker, settings: CoapSettings) -> None:
        if not settings.authenticate and not is_loopback(settings.host):
            raise DeliveryError(
                f"--insecure-no-auth serves without authentication, so only on a loopback"
                f" --coap address (127.0.0.1 or ::1), not on {settings.host!r}"
            )
        try:
            import aiocoap  # noqa: F401  (the coap extra)
        except ImportError:
            raise DeliveryError(
                "serve --coap needs aiocoap: pip install 'ajour[coap]' (or aiocoap>=0.4)"
            ) from None
        self.worker, self.settings = worker, settings
        self.stats: Counter[str] = Counter(dict.fromkeys(STATS, 0))
        self.host, self.port = settings.host, settings.port
        self._pool = ThreadPoolExecutor(settings.threads, "delivery-coap")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="delivery-coap", daemon=True)
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._decoy: Any = None
        self.observers = _Observers(self, settings.max_observers)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"coap://{host}:{self.port}"

    def snapshot(self) -> dict[str, int]:
        stats = dict(self.stats)
        stats["observers"] = len(self.observers)
        return stats

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self._failed is not None:
            raise self._failed

    def stop(self) -> None:
        stop = self._stop
        if stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(stop.set)
            self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def announce(self) -> None:
        """Look at the observed devices' targets now (from any thread)."""
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(wake.set)

    # the loop ---------------------------------------------------------------------------

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._failed = exc
            if self._ready.is_set():
                log.exception("the CoAP server stopped")
        finally:
            self._ready.set()
            self._loop.close()

    async def _serve(self) -> None:
        import aiocoap

        self._stop, self._wake = asyncio.Event(), asyncio.Event()
        try:
            context = await aiocoap.Context.create_server_context(
                make_site(self), bind=(self.host, self.port), transports=["udp6"]
            )
        except OSError as exc:
            raise DeliveryError(
                f"cannot serve CoAP on {self.host}:{self.port} (UDP): {exc.strerror or exc};"
                " choose a free --coap HOST:PORT"
            ) from None
        self.port = _bound_port(context, self.port)
        watcher = asyncio.ensure_future(self._watch())
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await context.shutdown()

    async def _watch(self) -> None:
        """Notify observers whose target version changed: on invalidations, and polled."""
        assert self._wake is not None
        subscribed: Any = None
        again = False
        while True:
            targets = self.worker.targets
            if targets is not subscribed:  # the first time, and after a fleet reload
                targets.subscribe(self.announce)
                subscribed = targets
            # after an invalidation, look twice: a layout source that was read within its
            # recheck interval (50 ms) sees the new index.json only the second time
            wait = min(AGAIN_S, self.settings.observe_poll) if again else self.settings.observe_poll
            again = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
                    again = True
            self._wake.clear()
            try:
                await self.observers.check()
            except Exception:  # the watcher never stops serving
                log.exception("looking at observed devices' targets failed")

    # work on the pool -------------------------------------------------------------------

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def authorized(self, who: Identity) -> bool:
        """The device may be served: known, and its password matches (when checked)."""
        targets = self.worker.targets
        known = targets.knows(who.app, who.device)
        if not self.settings.authenticate:
            return known
        if who.creds is None:
            return False
        user, password = who.creds
        if not known:
            device_auth.check(self._decoy_spec(), password)  # the same work; still 4.01
            self.worker.counters.add("unknown_device")
            return False
        spec = targets.fleet.devices[(who.app, who.device)].credentials
        username = None if user in (who.device, f"{who.device}@{who.app}") else user
        return device_auth.check(spec, password, username)

    def _decoy_spec(self) -> Any:
        if self._decoy is None:
            self._decoy = next(
                (
                    d.credentials
                    for d in self.worker.targets.fleet.devices.values()
                    if device_auth.passwords(d.credentials)
                ),
                {"credentials": [{"pass": secrets.token_urlsafe(24)}]},
            )
        return self._decoy

    def post(self, who: Identity, payload: bytes) -> tuple[str, bytes]:
        """``("changed", command)``, or the refusal's stats key and diagnostic."""
        if not who.app or not who.device:
            return "bad_request", UNNAMED.encode()
        if not self.authorized(who):
            self.worker.counters.add("unauthorized")
            return "unauthorized", UNAUTHORIZED.encode()
        reply = self.worker.handle(who.app, who.device, payload)
        if reply is not None:
            return "changed", reply
        try:
            decode_status(payload)
        except ProtocolError as exc:
            why = f"the status is not a valid embedded-update CBOR Status: {exc}"
            return "bad_request", why.encode()
        return "bad_request", b"the status was not answered"

    def target_version(self, app: str, device: str) -> bytes | None:
        source = self.worker.targets.source(app, device)
        if source is None:
            return None
        try:
            return source.target().version
        except Exception:  # a source down: no version to announce
            return None


def _bound_port(context: Any, wanted: int) -> int:
    """The UDP port the context listens on (the chosen one for port 0)."""
    if wanted:
        return wanted
    for interface in getattr(context, "request_interfaces", []):
        messages = getattr(interface, "token_interface", None)  # a MessageManager
        udp = getattr(messages, "message_interface", None)  # MessageInterfaceUDP6
        transport = getattr(udp, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            return int(sock.getsockname()[1])
    raise DeliveryError("cannot tell which UDP port the CoAP server got; give one in --coap")


class _Observers:
    """Observations by device, bounded; each remembers the version last announced."""

    def __init__(self, transport: CoapTransport, limit: int) -> None:
        self.transport, self.limit = transport, limit
        self._by_device: dict[tuple[str, str], dict[Any, bytes | None]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_device.values())

    def add(self, key: tuple[str, str], observation: Any, version: bytes | None) -> bool:
        if len(self) >= self.limit:
            return False
        self._by_device.setdefault(key, {})[observation] = version

        def cancel() -> None:
            found = self._by_device.get(key, {})
            found.pop(observation, None)
            if not found:
                self._by_device.pop(key, None)

        observation.accept(cancel)
        return True

    async def check(self) -> None:
        for key, observations in list(self._by_device.items()):
            version = await self.transport.run(self.transport.target_version, *key)
            for observation, announced in list(observations.items()):
                if announced != version:
                    observations[observation] = version
                    self.transport.stats["notifications"] += 1
                    observation.trigger()


__all__ = ["AUTHORIZATION_OPTION", "CBOR_FORMAT", "CoapSettings", "CoapTransport"]
