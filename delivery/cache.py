"""Caches for the delivery worker: tag resolution with a TTL, blobs LRU by bytes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A value per key for at most ``ttl`` seconds; ``invalidate`` drops it at once.

    A value looked up elsewhere is stored with ``put(key, value, since=generation())``,
    where the generation was read before the lookup began: when an ``invalidate`` came in
    between, the value may predate what it announced, and is not kept (else it would be
    served for a whole TTL after the publish event that should have ended it)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._data: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # invalidations so far

    def generation(self) -> int:
        with self._lock:
            return self._generation

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            stamp, value = hit
            if self._clock() - stamp > self.ttl:
                del self._data[key]
                return None
            return value

    def put(self, key: K, value: V, since: int | None = None) -> None:
        with self._lock:
            if since is None or since == self._generation:
                self._data[key] = (self._clock(), value)

    def invalidate(self, key: K | None = None) -> None:
        with self._lock:
            self._generation += 1
            if key is None:
                self._data.clear()
            else:
                self._data.pop(key, None)


class ByteLru(Generic[K]):
    """Immutable blobs by digest, least recently used evicted past ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._data: OrderedDict[K, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: bytes) -> None:
        with self._lock:
            if len(value) > self.capacity:  # larger than the whole cache: never kept, and
                old = self._data.pop(key, None)  # an older value must not stand in for it
                if old is not None:
                    self.size -= len(old)
                return
            old = self._data.pop(key, None)
            if old is not None:
                self.size -= len(old)
            self._data[key] = value
            self.size += len(value)
            while self.size > self.capacity:
                _, evicted = self._data.popitem(last=False)
                self.size -= len(evicted)
