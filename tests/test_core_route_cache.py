"""RouteCache: LRU order, TTL expiry, the "no cache" size and every counter."""

from __future__ import annotations

import math

import pytest

from pytest_cfn._core.route_cache import RouteCache
from pytest_cfn._errors import InvalidOptionError


def test_defaults_are_the_adr_figures() -> None:
    cache = RouteCache()
    assert cache.max_entries == 10_000
    assert cache.ttl == 60.0


def test_miss_then_put_then_hit() -> None:
    cache = RouteCache(max_entries=10, ttl=60.0)
    assert cache.get("agent.spawn", 0.0) is None
    cache.put("agent.spawn", "event:s1:agent.spawn", 0.0)
    assert cache.get("agent.spawn", 1.0) == "event:s1:agent.spawn"
    assert cache.stats() == {
        "hits": 1,
        "misses": 1,
        "evictions": 0,
        "expiries": 0,
        "size": 1,
        "max_entries": 10,
        "ttl": 60.0,
        "hit_rate": 0.5,
    }


def test_hit_rate_is_zero_before_any_lookup() -> None:
    cache = RouteCache()
    assert cache.hit_rate == 0.0
    assert cache.stats()["hit_rate"] == 0.0


def test_entry_is_served_just_before_ttl_and_expired_at_exactly_ttl() -> None:
    cache = RouteCache(max_entries=10, ttl=10.0)
    cache.put("t", "chan", 100.0)
    assert cache.get("t", 109.999) == "chan"
    assert cache.get("t", 110.0) is None
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["expiries"], stats["size"]) == (1, 1, 1, 0)


def test_expired_entry_is_removed_so_the_next_get_is_a_plain_miss() -> None:
    cache = RouteCache(max_entries=10, ttl=1.0)
    cache.put("t", "chan", 0.0)
    assert cache.get("t", 5.0) is None
    assert "t" not in cache
    assert cache.get("t", 6.0) is None
    assert (cache.expiries, cache.misses) == (1, 2)


def test_a_hit_does_not_extend_the_life_of_an_entry() -> None:
    cache = RouteCache(max_entries=10, ttl=10.0)
    cache.put("t", "chan", 0.0)
    for now in (2.0, 4.0, 6.0, 8.0):
        assert cache.get("t", now) == "chan"
    assert cache.get("t", 10.0) is None


def test_put_again_refreshes_value_and_ttl() -> None:
    cache = RouteCache(max_entries=10, ttl=10.0)
    cache.put("t", "old", 0.0)
    cache.put("t", "new", 8.0)
    assert len(cache) == 1
    assert cache.get("t", 15.0) == "new"
    assert cache.get("t", 18.0) is None
    assert cache.evictions == 0


def test_full_cache_evicts_least_recently_put() -> None:
    cache = RouteCache(max_entries=3, ttl=60.0)
    for key in ("a", "b", "c", "d"):
        cache.put(key, f"chan-{key}", 0.0)
    assert len(cache) == 3
    assert "a" not in cache
    assert all(key in cache for key in ("b", "c", "d"))
    assert cache.evictions == 1


def test_get_makes_an_entry_most_recently_used() -> None:
    cache = RouteCache(max_entries=3, ttl=60.0)
    for key in ("a", "b", "c"):
        cache.put(key, f"chan-{key}", 0.0)
    assert cache.get("a", 1.0) == "chan-a"
    cache.put("d", "chan-d", 2.0)
    assert "a" in cache
    assert "b" not in cache
    cache.put("e", "chan-e", 3.0)
    assert "c" not in cache
    assert sorted(k for k in "abcde" if k in cache) == ["a", "d", "e"]
    assert cache.evictions == 2


def test_put_of_an_existing_key_makes_it_most_recently_used_without_evicting() -> None:
    cache = RouteCache(max_entries=2, ttl=60.0)
    cache.put("a", "1", 0.0)
    cache.put("b", "2", 0.0)
    cache.put("a", "1b", 1.0)
    cache.put("c", "3", 2.0)
    assert "b" not in cache
    assert cache.get("a", 3.0) == "1b"
    assert cache.evictions == 1


def test_a_miss_does_not_change_lru_order() -> None:
    cache = RouteCache(max_entries=2, ttl=60.0)
    cache.put("a", "1", 0.0)
    cache.put("b", "2", 0.0)
    assert cache.get("zzz", 1.0) is None
    cache.put("c", "3", 2.0)
    assert "a" not in cache
    assert "b" in cache


def test_max_entries_zero_means_no_cache() -> None:
    cache = RouteCache(max_entries=0)
    cache.put("t", "chan", 0.0)
    assert len(cache) == 0
    assert cache.get("t", 0.0) is None
    assert cache.get("t", 1.0) is None
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["evictions"], stats["size"]) == (0, 2, 0, 0)
    assert stats["hit_rate"] == 0.0


@pytest.mark.parametrize("size", [10_000, 1_000, 100, 0])
def test_hit_rate_over_a_fixed_working_set_follows_cache_size(size: int) -> None:
    """500 distinct types looked up round-robin: they fit in 10,000 and 1,000, not in 100."""
    cache = RouteCache(max_entries=size, ttl=60.0)
    types = [f"type.{i}" for i in range(500)]
    for round_ in range(4):
        for t in types:
            if cache.get(t, float(round_)) is None:
                cache.put(t, f"event:s:{t}", float(round_))
    expected_hits = 3 * 500 if size >= 500 else 0
    assert cache.hits == expected_hits
    assert cache.misses == 2000 - expected_hits
    assert cache.evictions == (2000 - size if 0 < size < 500 else 0)
    assert len(cache) == min(size, 500)


def test_invalidate() -> None:
    cache = RouteCache(max_entries=10)
    cache.put("t", "chan", 0.0)
    assert cache.invalidate("t") is True
    assert cache.invalidate("t") is False
    assert cache.get("t", 0.0) is None
    assert cache.stats()["size"] == 0


def test_clear_keeps_counters() -> None:
    cache = RouteCache(max_entries=10)
    cache.put("a", "1", 0.0)
    cache.put("b", "2", 0.0)
    assert cache.get("a", 0.0) == "1"
    cache.clear()
    assert len(cache) == 0
    assert cache.get("a", 0.0) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_purge_expired_removes_only_expired_entries() -> None:
    cache = RouteCache(max_entries=10, ttl=10.0)
    cache.put("old", "1", 0.0)
    cache.put("edge", "2", 5.0)
    cache.put("young", "3", 8.0)
    assert cache.purge_expired(15.0) == 2
    assert len(cache) == 1
    assert "young" in cache
    assert cache.expiries == 2
    assert cache.purge_expired(15.0) == 0


def test_contains_does_not_count_as_lookup() -> None:
    cache = RouteCache(max_entries=10)
    cache.put("t", "chan", 0.0)
    assert "t" in cache
    assert "u" not in cache
    assert (cache.hits, cache.misses) == (0, 0)


def test_infinite_ttl_never_expires() -> None:
    cache = RouteCache(max_entries=10, ttl=math.inf)
    cache.put("t", "chan", 0.0)
    assert cache.get("t", 1e12) == "chan"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_entries": -1}, "max_entries is -1"),
        ({"max_entries": 1.5}, "max_entries must be an integer"),
        ({"max_entries": True}, "max_entries must be an integer"),
        ({"ttl": 0}, "ttl is 0 s; it must be > 0"),
        ({"ttl": -5.0}, "ttl is -5.0 s; it must be > 0"),
        ({"ttl": math.nan}, "ttl must be a number"),
        ({"ttl": "60"}, "ttl must be a number"),
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        RouteCache(**kwargs)  # type: ignore[arg-type]


def test_repr_shows_size_and_counters() -> None:
    cache = RouteCache(max_entries=5, ttl=1.0)
    cache.put("t", "c", 0.0)
    assert repr(cache) == "RouteCache(size=1, max_entries=5, ttl=1.0, hits=0, misses=0)"
