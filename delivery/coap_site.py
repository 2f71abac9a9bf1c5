"""The CoAP resource ``/v1/dfu`` of :mod:`delivery.coap`, on aiocoap.

aiocoap is imported when :func:`make_site` runs (``serve --coap``), never when this module
is: the class is made inside the function. Every answer that may block (a bcrypt check, a
firmware source) is computed on the transport's thread pool, never on the event loop; any
exception becomes a 5.00, never a stopped server.
"""

from __future__ import annotations

import logging
from typing import Any

from delivery.http import _basic
from delivery.protocol import MAX_STATUS_BYTES

log = logging.getLogger("delivery.coap")

CBOR_FORMAT = 60  # application/cbor
AUTHORIZATION_OPTION = 4209  # Drogue Cloud's coap-endpoint: an HTTP-style Authorization
DFU_PATH = ("v1", "dfu")
UNAUTHORIZED = (
    "authenticate the device: CoAP option 4209 'Basic base64(<device>@<app>:<password>)'"
    " (or a username of its credentials with ?application=&device=)"
)
UNNAMED = (
    "name the device: ?application=<app>&device=<device>, or option 4209"
    " 'Basic base64(<device>@<app>:<password>)'"
)


def cbor_version(version: bytes | None) -> bytes:
    """CBOR null, or a byte string (the protocol's form of a version)."""
    if version is None:
        return b"\xf6"
    n = len(version)
    if n < 24:
        head = bytes([0x40 | n])
    elif n < 0x100:
        head = bytes([0x58, n])
    else:
        head = bytes([0x59]) + n.to_bytes(2, "big")
    return head + version


class Identity:
    """Who a request names (query ``application``, ``device``) and how it logs in (option
    4209); ``device@app`` as the user names the device when the query does not."""

    def __init__(self, request: Any) -> None:
        query: dict[str, str] = {}
        for item in request.opt.uri_query:  # aiocoap has undone the percent-encoding
            key, _, value = str(item).partition("=")
            query.setdefault(key, value)
        self.app, self.device = query.get("application", ""), query.get("device", "")
        self.creds: tuple[str, str] | None = None
        for option in request.opt.get_option(AUTHORIZATION_OPTION)[:1]:
            value = option.value
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            self.creds = _basic(text)
        if self.creds and "@" in self.creds[0] and not self.device:
            self.device, self.app = self.creds[0].rsplit("@", 1)


def _over_limit(request: Any) -> bool:
    """A Block1 transfer that has passed, or announces (Size1), more than a status may be."""
    block = request.opt.block1
    if block is not None and block.start + len(request.payload) > MAX_STATUS_BYTES:
        return True
    size1 = request.opt.size1
    return size1 is not None and size1 > MAX_STATUS_BYTES


def post_refusal(request: Any) -> tuple[str, str, str] | None:
    """(code name, stats key, diagnostic) when a POST is refused before anyone is asked."""
    got = request.opt.content_format
    if got != CBOR_FORMAT:
        shown = "none" if got is None else str(int(got))
        return (
            "UNSUPPORTED_CONTENT_FORMAT",
            "bad_format",
            f"send the status as Content-Format {CBOR_FORMAT} (application/cbor), not {shown}",
        )
    if _over_limit(request) or len(request.payload) > MAX_STATUS_BYTES:
        return (
            "REQUEST_ENTITY_TOO_LARGE",
            "too_large",
            f"a status is at most {MAX_STATUS_BYTES} bytes",
        )
    return None


class DfuHandlers:
    """The methods of the ``/v1/dfu`` resource; :func:`make_site` mixes them into aiocoap's
    ObservableResource (``self.coap`` is the aiocoap module, ``self.code`` its Code)."""

    coap: Any
    code: Any
    transport: Any

    def text(self, code: Any, message: str, **options: Any) -> Any:
        return self.coap.Message(code=code, payload=message.encode(), **options)

    async def needs_blockwise_assembly(self, request: Any) -> bool:
        """Reassemble Block1 only while the status stays within the limit; a larger one
        reaches render() unassembled and is refused there."""
        return not _over_limit(request)

    async def render(self, request: Any) -> Any:
        self.transport.stats["requests"] += 1
        try:
            return await super().render(request)  # type: ignore[misc]
        except self.coap.error.RenderableError:
            raise  # 4.05 Method Not Allowed and the like
        except Exception:
            self.transport.stats["errors"] += 1
            log.exception("CoAP request failed")
            return self.text(self.code.INTERNAL_SERVER_ERROR, "internal error; try again")

    async def render_post(self, request: Any) -> Any:
        """Naming, authentication and the worker in one trip to the thread pool."""
        transport, stats = self.transport, self.transport.stats
        refused = post_refusal(request)
        if refused is not None:
            code, key, message = refused
            stats[key] += 1
            size1 = MAX_STATUS_BYTES if key == "too_large" else None
            return self.text(getattr(self.code, code), message, size1=size1)
        outcome, body = await transport.run(transport.post, Identity(request), request.payload)
        if outcome == "changed":
            stats["changed"] += 1
            return self.coap.Message(
                code=self.code.CHANGED, payload=body, content_format=CBOR_FORMAT
            )
        return self._refused(outcome, body.decode())

    async def render_get(self, request: Any) -> Any:
        who = Identity(request)
        problem = await self._identify(who)
        if problem is not None:
            return problem
        transport = self.transport
        version = await transport.run(transport.target_version, who.app, who.device)
        return self.coap.Message(
            code=self.code.CONTENT, payload=cbor_version(version), content_format=CBOR_FORMAT
        )

    async def add_observation(self, request: Any, observation: Any) -> None:
        transport, who = self.transport, Identity(request)
        if who.app and who.device and await transport.run(transport.authorized, who):
            version = await transport.run(transport.target_version, who.app, who.device)
            if transport.observers.add((who.app, who.device), observation, version):
                return
            transport.stats["observers_refused"] += 1
            log.warning("%d CoAP observers: one more refused", len(transport.observers))
        # refused (render_get answers 4.01, or without Observe when full): aiocoap needs an
        # accepted observation to end it cleanly
        observation.accept(lambda: None)
        observation.deregister()

    async def _identify(self, who: Identity) -> Any:
        transport = self.transport
        if not who.app or not who.device:
            return self._refused("bad_request", UNNAMED)
        if not await transport.run(transport.authorized, who):
            transport.worker.counters.add("unauthorized")
            return self._refused("unauthorized", UNAUTHORIZED)
        return None

    def _refused(self, outcome: str, message: str) -> Any:
        self.transport.stats[outcome] += 1
        code = self.code.UNAUTHORIZED if outcome == "unauthorized" else self.code.BAD_REQUEST
        return self.text(code, message)


def make_site(transport: Any) -> Any:
    """An aiocoap Site with ``/v1/dfu`` served by ``transport`` (a CoapTransport)."""
    import aiocoap
    import aiocoap.resource
    from aiocoap.numbers.codes import Code

    class Dfu(DfuHandlers, aiocoap.resource.ObservableResource):  # type: ignore[misc]
        pass

    resource = Dfu()
    resource.coap, resource.code, resource.transport = aiocoap, Code, transport
    site = aiocoap.resource.Site()
    site.add_resource(DFU_PATH, resource)
    return site
