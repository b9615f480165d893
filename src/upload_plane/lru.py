"""A least-recently-used cache bounded by the bytes it holds, for what is verified once and asked
about again and again (a token's signature, an Uppy capability's MAC).

Unlike ``functools.lru_cache`` it holds only what the caller puts in it (callers put successes,
never failures, so a stream of bogus credentials leaves nothing behind), and its bound is a
number of bytes (as the caller estimates each entry), not of entries: a cache of 8,192 entries
keyed by strings a client chose could hold gigabytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SizedCache(Generic[K, V]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()  # tests serve several apps from one process, one thread each

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: K, value: V, size: int) -> None:
        """Keep ``value`` (about ``size`` bytes with its key), dropping the least recently used
        entries until everything fits; an entry larger than the whole bound is not kept."""
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0
