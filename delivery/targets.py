"""Which firmware each device should run: fleet spec (Device overrides Application) → source.

``container.image`` is relative to the registry prefix: ``host[:port]/path`` for a registry,
or ``oci-layout:///dir`` for layout directories on disk (one per repository, the embedded
default). ``file`` names a firmware in the file directory. Sources are shared by every
device with the same spec, so a fleet of thousands resolves a handful of tags.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from ajour_build.core.artifact import credentials
from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.reference import OciRef
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.artifact.trust import TrustPolicy
from ajour_build.core.errors import ArtifactError
from ajour_build.core.fleet import Fleet
from ajour_build.core.spec.firmware import Firmware
from delivery.cache import ByteLru, TtlCache
from delivery.decision import FirmwareImage
from delivery.errors import DeliveryError
from delivery.sources.file import FileSource
from delivery.sources.firmware_source import FirmwareSource, SourceUnavailable
from delivery.sources.layout import LayoutSource
from delivery.sources.oci import OciSource
from delivery.sources.trust import Refusing, Verifier

LAYOUT = "oci-layout://"


class NotPublished(SourceUnavailable):
    """A version that its repository has no version tag of (or whose tag holds another)."""


def _split(image: str) -> tuple[str, str]:
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"


class Route(NamedTuple):
    """Where a device's firmware comes from: the shared source (None: no firmware assigned)
    and the kind of its spec (``container``, ``hawkbit`` or ``file``; ``""`` without one)."""

    source: FirmwareSource | None
    kind: str


NO_FIRMWARE = Route(None, "")


@dataclass(frozen=True)
class HawkbitSettings:
    """hawkBit DDI as a gateway: one tenant, one gateway token for all controllers."""

    base_url: str
    tenant: str
    gateway_token: str
    insecure: bool = False
    lookup_ttl: float = 10.0  # seconds a controller's lookup is reused (sources/hawkbit.py)

    def __repr__(self) -> str:  # the token never reaches a log
        return f"HawkbitSettings(base_url={self.base_url!r}, tenant={self.tenant!r})"


@dataclass
class Targets:
    fleet: Fleet
    registry: str = "127.0.0.1:5000/ajour"
    file_dir: Path | None = None
    ttl: float = 30.0
    insecure: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    blob_cache_bytes: int = 64 * 1024 * 1024
    hawkbit: HawkbitSettings | None = None
    # per application: serve only firmware its keys signed (delivery/sources/trust.py)
    trust: Mapping[str, TrustPolicy] = field(default_factory=dict)
    _sources: dict[str, Route] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._tags: TtlCache[str, str] = TtlCache(self.ttl)
        self._by_device: dict[tuple[str, str], Route] = {}
        self._blobs: ByteLru[str] = ByteLru(self.blob_cache_bytes)
        self._pinned: dict[tuple[int, str], FirmwareImage] = {}
        self._verifiers = {app: Verifier(policy) for app, policy in self.trust.items()}
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every :meth:`invalidate` (a publish event): the CoAP
        transport's announcements. It runs on the invalidating thread and must be quick."""
        with self._lock:
            self._listeners.append(callback)

    def knows(self, application: str, device: str) -> bool:
        return (application, device) in self.fleet.devices

    def firmware_spec(self, application: str, device: str) -> Firmware | None:
        return self.fleet.effective_firmware(application, device)

    def source(self, application: str, device: str) -> FirmwareSource | None:
        """The shared source for this device's firmware spec (its application's for a device
        the fleet does not know), or None if it has none."""
        route = self.route(application, device)
        if route is None:
            route = self._shared(self.firmware_spec(application, device), application)
        return route.source

    def route(self, application: str, device: str) -> Route | None:
        """The device's route (shared by every device with the same spec); None for a
        device the fleet does not know. Found once per device: the fleet does not change
        (a reload makes new ``Targets``)."""
        key = (application, device)
        known = self._by_device.get(key)
        if known is not None:
            return known
        if key not in self.fleet.devices:
            return None
        spec = self.firmware_spec(application, device)
        found = self._by_device[key] = self._shared(spec, application)
        return found

    def _shared(self, spec: Firmware | None, application: str) -> Route:
        """The route of every device with this spec (and this trust policy)."""
        if spec is None:
            return NO_FIRMWARE
        trusted = application if application in self._verifiers else ""
        spec_key = trusted + "\0" + spec.model_dump_json(exclude={"container": {"build"}})
        with self._lock:
            found = self._sources.get(spec_key)
            if found is None:
                source: FirmwareSource = (
                    Refusing(application, spec.kind)
                    if trusted and spec.container is None
                    else self._make(spec, self._verifiers.get(application))
                )
                found = self._sources[spec_key] = Route(source, spec.kind)
            return found

    def _make(self, spec: Firmware, verifier: Verifier | None = None) -> FirmwareSource:
        if spec.container is not None:
            repo, tag = _split(spec.container.image)
            if self.registry.startswith(LAYOUT):
                root = Path(self.registry[len(LAYOUT) :]) / repo
                return LayoutSource(LayoutStore(root), tag, self._blobs, verifier=verifier)
            host, _, prefix = self.registry.partition("/")
            full = f"{prefix}/{repo}" if prefix else repo
            reader = RegistryReader(host, credentials.lookup(host, self.env), self.insecure)
            ref = OciRef(host, full, tag)
            return OciSource(reader, ref, self._tags, self._blobs, verifier=verifier)
        if spec.file is not None:
            if self.file_dir is None:
                raise DeliveryError(
                    f"firmware file {spec.file.name!r} needs a file directory: pass --file-dir"
                )
            return FileSource(self.file_dir, spec.file.name)
        if spec.hawkbit is not None:
            if self.hawkbit is None:
                raise DeliveryError(
                    f"hawkBit controller {spec.hawkbit.controller!r} needs hawkBit settings:"
                    " pass --hawkbit-url and --hawkbit-tenant, and AJOUR_HAWKBIT_GATEWAY_TOKEN"
                )
            from delivery.sources.hawkbit import HawkbitSource

            return HawkbitSource(
                self.hawkbit.base_url,
                self.hawkbit.tenant,
                spec.hawkbit.controller,
                self.hawkbit.gateway_token,
                insecure=self.hawkbit.insecure,
                ttl=self.hawkbit.lookup_ttl,
            )
        raise DeliveryError("firmware spec has no source")  # pragma: no cover

    def pinned(self, source: FirmwareSource, version: str) -> FirmwareImage:
        """The firmware of ``version`` in ``source``'s repository: its immutable version tag
        (publishers tag every artifact with its version). Read once, then kept: a version
        never changes its bytes. Raises ``SourceUnavailable`` for other kinds of source."""
        key = (id(source), version)
        found = self._pinned.get(key)
        if found is not None:
            return found
        tagged: FirmwareSource
        if isinstance(source, LayoutSource):
            tagged = LayoutSource(source.store, version, self._blobs, verifier=source.verifier)
        elif isinstance(source, OciSource):
            ref = replace(source.ref, tag=version, digest="")
            tagged = OciSource(
                source.reader, ref, self._tags, self._blobs, verifier=source.verifier
            )
        else:
            raise SourceUnavailable(
                f"version {version!r} cannot be looked up in a {type(source).__name__}:"
                " staged rollouts need container firmware (a registry or an OCI layout)"
            )
        found = tagged.target()
        if found.version.decode(errors="replace") != version:
            raise NotPublished(
                f"tag {version!r} holds version {found.version.decode(errors='replace')!r}"
            )
        with self._lock:
            return self._pinned.setdefault(key, found)

    def published(self, application: str, version: str) -> FirmwareImage:
        """The firmware ``version`` of the application's repository, looked up as ``pinned``
        looks it up (so a rollout to it is served from the same cache). NotPublished names
        the repository and the tag that is missing; SourceUnavailable is a repository that
        cannot be read now; DeliveryError a firmware that is not a container."""
        spec = self.fleet.effective_firmware(application)
        source = self._shared(spec, application).source
        where, found = "", None
        try:
            if isinstance(source, LayoutSource):
                where = f"the OCI layout {source.store.root}"
                found = source.store.resolve(version)
            elif isinstance(source, OciSource):
                ref = source.ref
                where = f"the registry repository {ref.host}/{ref.repository}"
                found = source.reader.resolve(replace(ref, tag=version, digest=""))
            else:
                kind = f"{spec.kind} firmware" if spec is not None else "no firmware"
                raise DeliveryError(
                    f"application {application!r} has {kind}: a rollout to a chosen version"
                    " reads it by its version tag, so it needs container firmware"
                )
        except ArtifactError as exc:
            raise SourceUnavailable(f"{where}: {exc}") from None
        if found is None:
            raise NotPublished(
                f"version {version!r} of {application!r} is not published: {where} has no tag"
                f" {version!r} (publishers tag every artifact with its version; publish it"
                " first, or pick a version that has a tag)"
            )
        try:
            return self.pinned(source, version)
        except NotPublished as exc:
            raise NotPublished(f"version {version!r} of {application!r}, {where}: {exc}") from None

    def invalidate(self, image: str = "", tag: str = "") -> int:
        """Drop cached tag resolutions (all, or those of ``image``, of ``tag`` if given) and
        the trust refusals of every source of ``image``, whichever tag was pushed (a ``.sig``
        names the digest, not the source's tag); return how many sources had their tag
        dropped."""
        with self._lock:
            sources = [route.source for route in self._sources.values() if route.source]
        count = 0
        for source in sources:
            ref = getattr(source, "ref", None)
            if not image or (
                isinstance(ref, OciRef) and ref.image == image and (not tag or ref.tag == tag)
            ):
                source.invalidate()
                count += 1
            elif isinstance(source, OciSource) and source.ref.image == image:
                source.forget_refusals()  # another tag of its repository: a late .sig?
        for callback in list(self._listeners):
            callback()
        return count
