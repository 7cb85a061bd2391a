"""DispatchQueue: priority order, the drop-lowest-first overflow policy, critical never dropped."""

from __future__ import annotations

import random

import pytest

from pytest_cfn._core.dispatch_queue import DispatchQueue
from pytest_cfn._errors import InvalidOptionError


def drain(queue: DispatchQueue[object]) -> list[object]:
    out: list[object] = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def no_drops() -> dict[int, int]:
    return dict.fromkeys(range(1, 10), 0)


def test_empty_queue() -> None:
    queue = DispatchQueue[object]()
    assert queue.maxsize == 10_000
    assert len(queue) == 0
    assert not queue
    assert queue.pop() is None
    assert queue.pop_batch(10) == []
    assert queue.stats() == {
        "queued": 0,
        "maxsize": 10_000,
        "dropped": 0,
        "dropped_by_priority": no_drops(),
        "overflow_critical": 0,
        "high_water": 0,
    }


def test_fifo_within_one_priority() -> None:
    queue = DispatchQueue[object]()
    for i in range(5):
        assert queue.push(5, f"m{i}") is True
    assert len(queue) == 5
    assert drain(queue) == ["m0", "m1", "m2", "m3", "m4"]
    assert len(queue) == 0


def test_highest_priority_first_fifo_within_each() -> None:
    queue = DispatchQueue[object]()
    pushes = [(1, "a1"), (5, "a5"), (9, "a9"), (5, "b5"), (1, "b1"), (9, "b9"), (7, "a7")]
    for priority, item in pushes:
        queue.push(priority, item)
    assert drain(queue) == ["a9", "b9", "a7", "a5", "b5", "a1", "b1"]


def test_priority_order_matches_a_stable_sort_for_random_input() -> None:
    rng = random.Random(3)
    queue = DispatchQueue[object](maxsize=10_000)
    pushed = [(rng.randint(1, 9), i) for i in range(3000)]
    for priority, item in pushed:
        queue.push(priority, item)
    expected = [item for _, item in sorted(pushed, key=lambda pi: -pi[0])]
    assert drain(queue) == expected


def test_interleaved_push_and_pop_keeps_order_and_count() -> None:
    queue = DispatchQueue[object]()
    queue.push(3, "x")
    queue.push(6, "y")
    assert queue.pop() == "y"
    queue.push(3, "z")
    queue.push(8, "w")
    assert len(queue) == 3
    assert [queue.pop(), queue.pop(), queue.pop(), queue.pop()] == ["w", "x", "z", None]


def test_pop_batch_takes_in_dispatch_order_across_priorities() -> None:
    queue = DispatchQueue[object]()
    for i in range(3):
        queue.push(2, f"low{i}")
        queue.push(8, f"high{i}")
    assert queue.pop_batch(4) == ["high0", "high1", "high2", "low0"]
    assert len(queue) == 2
    assert queue.pop_batch(10) == ["low1", "low2"]
    assert len(queue) == 0
    assert queue.pop_batch(10) == []


def test_pop_batch_partial_priority_then_continue() -> None:
    queue = DispatchQueue[object]()
    for i in range(5):
        queue.push(5, i)
    assert queue.pop_batch(2) == [0, 1]
    assert queue.len_priority(5) == 3
    queue.push(9, "urgent")
    assert queue.pop_batch(2) == ["urgent", 2]
    assert queue.pop() == 3
    assert queue.pop() == 4
    assert queue.pop() is None


def test_pop_batch_of_zero_takes_nothing() -> None:
    queue = DispatchQueue[object]()
    queue.push(5, "x")
    assert queue.pop_batch(0) == []
    assert len(queue) == 1


def test_full_queue_drops_incoming_of_lower_priority() -> None:
    queue = DispatchQueue[object](maxsize=3)
    for i in range(3):
        queue.push(5, f"q{i}")
    assert queue.push(4, "incoming") is False
    assert queue.push(1, "incoming") is False
    assert len(queue) == 3
    drops = no_drops() | {4: 1, 1: 1}
    assert queue.stats()["dropped_by_priority"] == drops
    assert queue.dropped == 2
    assert drain(queue) == ["q0", "q1", "q2"]


def test_full_queue_drops_incoming_of_equal_priority() -> None:
    queue = DispatchQueue[object](maxsize=2)
    queue.push(5, "a")
    queue.push(5, "b")
    assert queue.push(5, "c") is False
    assert queue.dropped_by_priority()[5] == 1
    assert drain(queue) == ["a", "b"]


def test_full_queue_evicts_the_oldest_of_the_lowest_priority_for_a_higher_one() -> None:
    queue = DispatchQueue[object](maxsize=4)
    queue.push(3, "old3")
    queue.push(2, "old2")
    queue.push(2, "new2")
    queue.push(6, "six")
    assert queue.push(4, "four") is True
    assert len(queue) == 4
    assert queue.dropped_by_priority() == no_drops() | {2: 1}
    assert drain(queue) == ["six", "four", "old3", "new2"]


def test_eviction_repeats_lowest_first_as_higher_items_arrive() -> None:
    queue = DispatchQueue[object](maxsize=3)
    queue.push(1, "p1")
    queue.push(2, "p2")
    queue.push(3, "p3")
    assert queue.push(7, "a") is True  # evicts p1
    assert queue.push(7, "b") is True  # evicts p2
    assert queue.push(7, "c") is True  # evicts p3
    assert queue.push(7, "d") is False  # only 7s left: incoming 7 dropped
    assert queue.dropped_by_priority() == no_drops() | {1: 1, 2: 1, 3: 1, 7: 1}
    assert queue.dropped == 4
    assert drain(queue) == ["a", "b", "c"]


@pytest.mark.parametrize("critical", [8, 9])
def test_critical_item_evicts_a_lower_item_when_there_is_one(critical: int) -> None:
    queue = DispatchQueue[object](maxsize=2)
    queue.push(5, "a")
    queue.push(7, "b")
    assert queue.push(critical, "c") is True
    assert len(queue) == 2
    assert queue.overflow_critical == 0
    assert queue.dropped_by_priority() == no_drops() | {5: 1}


@pytest.mark.parametrize(("queued", "incoming"), [(8, 8), (9, 9), (9, 8), (8, 9)])
def test_critical_items_are_never_dropped_and_overflow_instead(queued: int, incoming: int) -> None:
    queue = DispatchQueue[object](maxsize=2)
    queue.push(queued, "q0")
    queue.push(queued, "q1")
    assert queue.push(incoming, "over") is True
    assert len(queue) == 3
    assert queue.overflow_critical == 1
    assert queue.dropped == 0
    assert queue.high_water == 3
    assert sorted(map(str, drain(queue))) == ["over", "q0", "q1"]


def test_mixed_critical_queue_overflows_rather_than_evicting_an_eight() -> None:
    queue = DispatchQueue[object](maxsize=2)
    queue.push(8, "eight")
    queue.push(9, "nine")
    assert queue.push(9, "nine2") is True
    assert queue.overflow_critical == 1
    assert queue.dropped == 0
    assert drain(queue) == ["nine", "nine2", "eight"]


def test_non_critical_is_dropped_when_full_of_critical() -> None:
    queue = DispatchQueue[object](maxsize=2)
    queue.push(8, "a")
    queue.push(9, "b")
    assert queue.push(7, "c") is False
    assert queue.dropped_by_priority() == no_drops() | {7: 1}
    assert queue.overflow_critical == 0


def test_overflowed_queue_stays_full_until_drained_below_maxsize() -> None:
    queue = DispatchQueue[object](maxsize=2)
    for i in range(4):
        queue.push(9, i)
    assert len(queue) == 4
    assert queue.overflow_critical == 2
    assert queue.pop() == 0
    assert queue.push(5, "low") is False  # still at 3 > maxsize
    assert queue.pop_batch(2) == [1, 2]
    assert queue.push(5, "low") is True  # one was queued: room again
    assert len(queue) == 2
    assert queue.push(6, "mid") is True  # evicts "low"
    assert queue.dropped_by_priority() == no_drops() | {5: 2}
    assert drain(queue) == [3, "mid"]


def test_high_water_tracks_the_maximum_length() -> None:
    queue = DispatchQueue[object](maxsize=100)
    for i in range(10):
        queue.push(5, i)
    for _ in range(7):
        queue.pop()
    queue.push(5, "x")
    assert queue.high_water == 10
    assert queue.stats()["high_water"] == 10
    assert queue.stats()["queued"] == 4


def test_full_stats_after_a_flood() -> None:
    queue = DispatchQueue[object](maxsize=5)
    for priority in (1, 1, 2, 3, 4):
        queue.push(priority, priority)
    # five 5s evict 1, 1, 2, 3, 4; a sixth 5 is refused; the 9 evicts the oldest 5
    accepted = [queue.push(p, f"{p}-{i}") for i, p in enumerate((5, 5, 5, 5, 5, 5, 9))]
    assert accepted == [True, True, True, True, True, False, True]
    assert queue.stats() == {
        "queued": 5,
        "maxsize": 5,
        "dropped": 7,
        "dropped_by_priority": no_drops() | {1: 2, 2: 1, 3: 1, 4: 1, 5: 2},
        "overflow_critical": 0,
        "high_water": 5,
    }
    assert drain(queue) == ["9-6", "5-1", "5-2", "5-3", "5-4"]


def test_maxsize_one() -> None:
    queue = DispatchQueue[object](maxsize=1)
    assert queue.push(3, "a")
    assert queue.push(2, "b") is False
    assert queue.push(4, "c") is True
    assert drain(queue) == ["c"]
    assert queue.dropped_by_priority() == no_drops() | {2: 1, 3: 1}


@pytest.mark.parametrize("maxsize", [0, -1, 2.5, True, None])
def test_invalid_maxsize_is_refused(maxsize: object) -> None:
    with pytest.raises(InvalidOptionError, match="maxsize must be an integer >= 1"):
        DispatchQueue[object](maxsize=maxsize)  # type: ignore[arg-type]


def test_repr() -> None:
    queue = DispatchQueue[object](maxsize=3)
    queue.push(5, "x")
    assert repr(queue) == "DispatchQueue(queued=1, maxsize=3, dropped=0, overflow_critical=0)"
