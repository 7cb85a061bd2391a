"""The route cache: event type -> channel name, LRU with a time to live.

ADR-002 puts a 10,000-entry LRU cache (60 s TTL) in front of the Redis lookup of
a route override (``route:{type}``). This is the decision half: the transport
calls :meth:`RouteCache.get`, and on a miss reads Redis and calls
:meth:`RouteCache.put`. ``max_entries=0`` turns caching off (every lookup is a
miss) so the ADR's "no cache" row can be measured with the same code.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from pytest_cfn._errors import InvalidOptionError

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_TTL = 60.0


class RouteCache:
    """LRU + TTL map from event type to channel name; time is passed in as ``now``.

    An entry put at ``t`` is served while ``now < t + ttl`` and is expired from
    ``t + ttl`` on. A hit moves the entry to the most recently used end but does
    not extend its life: a route override changed in Redis is picked up within
    ``ttl`` however hot the type is.
    """

    __slots__ = (
        "_data",
        "_max_entries",
        "_move_to_end",
        "_ttl",
        "evictions",
        "expiries",
        "hits",
        "last_hit",
        "misses",
    )

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, ttl: float = DEFAULT_TTL) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int):
            raise InvalidOptionError(
                f"route cache max_entries must be an integer >= 0 (0 = no cache), "
                f"got {max_entries!r}"
            )
        if max_entries < 0:
            raise InvalidOptionError(
                f"route cache max_entries is {max_entries}; use 0 (no cache) or more"
            )
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or math.isnan(ttl):
            raise InvalidOptionError(f"route cache ttl must be a number of seconds, got {ttl!r}")
        if ttl <= 0:
            raise InvalidOptionError(
                f"route cache ttl is {ttl} s; it must be > 0 "
                "(use max_entries=0 to turn caching off)"
            )
        self._max_entries = max_entries
        self._ttl = float(ttl)
        # value, and the monotonic time at which it expires
        self._data: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._move_to_end = self._data.move_to_end
        self.last_hit: tuple[str, str, float] | None = None
        """(key, value, expires_at) of the last hit: already the most recently used, so a
        repeated hit (one event type published over and over) needs no reordering. Read
        only: a planner checks it inline (a hit there counts itself in ``hits``)."""
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expiries = 0

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @property
    def ttl(self) -> float:
        return self._ttl

    def get(self, key: str, now: float) -> str | None:
        """The cached channel for ``key``, or None on a miss (absent or expired)."""
        last = self.last_hit
        if last is not None and last[0] == key and now < last[2]:
            self.hits += 1
            return last[1]
        # try/except: the hit path is the hot one (~20% faster than .get()); a miss
        # costs more here but is followed by a Redis round trip anyway
        try:
            value, expires_at = self._data[key]
        except KeyError:
            self.misses += 1
            return None
        if now < expires_at:
            self._move_to_end(key)
            self.hits += 1
            self.last_hit = (key, value, expires_at)
            return value
        del self._data[key]
        self.expiries += 1
        self.misses += 1
        return None

    def put(self, key: str, value: str, now: float) -> None:
        """Store ``key -> value`` for ``ttl`` seconds from ``now``; evicts the LRU entry if full."""
        if not self._max_entries:
            return
        self.last_hit = None
        data = self._data
        if key in data:
            self._move_to_end(key)
        elif len(data) >= self._max_entries:
            data.popitem(last=False)
            self.evictions += 1
        data[key] = (value, now + self._ttl)

    def invalidate(self, key: str) -> bool:
        """Forget ``key`` (its route changed); True if it was cached."""
        self.last_hit = None
        return self._data.pop(key, None) is not None

    def purge_expired(self, now: float) -> int:
        """Remove every expired entry (O(size)); returns how many went. Counted as expiries."""
        self.last_hit = None
        expired = [key for key, (_, expires_at) in self._data.items() if now >= expires_at]
        for key in expired:
            del self._data[key]
        self.expiries += len(expired)
        return len(expired)

    def clear(self) -> None:
        """Forget every entry; the counters are kept."""
        self.last_hit = None
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        """True if ``key`` has an entry, expired or not (does not count as a lookup)."""
        return key in self._data

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses), or 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "expiries": self.expiries,
            "size": len(self._data),
            "max_entries": self._max_entries,
            "ttl": self._ttl,
            "hit_rate": self.hit_rate,
        }

    def __repr__(self) -> str:
        return (
            f"RouteCache(size={len(self._data)}, max_entries={self._max_entries}, "
            f"ttl={self._ttl}, hits={self.hits}, misses={self.misses})"
        )
