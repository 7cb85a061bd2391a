"""The bounded queue between the socket reader and the handlers.

Reading the socket in one place and running handlers elsewhere keeps a slow
handler from stalling the read, and a stalled read is what makes Redis cut a
subscriber off at ``client-output-buffer-limit pubsub``. The queue between the
two is bounded, with an explicit overflow policy and counters:

- Dispatch in priority order: the highest priority first, FIFO within one.
- When full, drop the lowest priority first. An incoming item at or below the
  lowest queued priority is dropped; otherwise the oldest item of the lowest
  queued priority is evicted to make room.
- Priorities 8 and 9 are never dropped: when nothing below 8 is left to evict,
  a critical item is accepted beyond ``maxsize`` and counted as
  ``overflow_critical``.

Not thread-safe by itself: the transport wraps it with its lock or condition.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar

from pytest_cfn._errors import InvalidOptionError

DEFAULT_MAXSIZE = 10_000
CRITICAL_PRIORITY = 8
_PRIORITIES = range(1, 10)

T = TypeVar("T")


class DispatchQueue(Generic[T]):
    """One deque per priority, plus a bitmask of the non-empty ones.

    Bit ``p`` of ``_mask`` is set while priority ``p`` has items, so the
    highest waiting priority is ``_mask.bit_length() - 1`` and the lowest is
    ``(_mask & -_mask).bit_length() - 1``: push and pop are O(1). ``push`` does
    not check ``priority``; validate it where it enters (envelope decoding does).
    Generic in the item type: ``DispatchQueue[Envelope](maxsize)``.
    """

    __slots__ = (
        "_count",
        "_dropped",
        "_mask",
        "_maxsize",
        "_queues",
        "high_water",
        "overflow_critical",
    )

    def __init__(self, maxsize: int = DEFAULT_MAXSIZE) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise InvalidOptionError(
                f"dispatch queue maxsize must be an integer >= 1, got {maxsize!r}"
            )
        self._maxsize = maxsize
        # index = priority; index 0 is never used
        self._queues: tuple[deque[T], ...] = tuple(deque() for _ in range(10))
        self._mask = 0
        self._count = 0
        self._dropped = [0] * 10
        self.high_water = 0
        self.overflow_critical = 0

    @property
    def maxsize(self) -> int:
        return self._maxsize

    def push(self, priority: int, item: T) -> bool:
        """Queue ``item``; False if it was dropped (the queue was full of equal or higher)."""
        if self._count >= self._maxsize and not self._make_room(priority):
            return False
        self._queues[priority].append(item)
        self._mask |= 1 << priority
        count = self._count + 1
        self._count = count
        if count > self.high_water:
            self.high_water = count
        return True

    def _make_room(self, priority: int) -> bool:
        """Full: evict one lower item, or refuse ``priority``, or let a critical one overflow."""
        lowest = (self._mask & -self._mask).bit_length() - 1
        if lowest < priority and lowest < CRITICAL_PRIORITY:
            queue = self._queues[lowest]
            queue.popleft()
            if not queue:
                self._mask &= ~(1 << lowest)
            self._count -= 1
            self._dropped[lowest] += 1
            return True
        if priority >= CRITICAL_PRIORITY:
            self.overflow_critical += 1
            return True
        self._dropped[priority] += 1
        return False

    def pop(self) -> T | None:
        """The oldest item of the highest priority, or None if the queue is empty."""
        mask = self._mask
        if not mask:
            return None
        priority = mask.bit_length() - 1
        queue = self._queues[priority]
        item = queue.popleft()
        if not queue:
            self._mask = mask & ~(1 << priority)
        self._count -= 1
        return item

    def pop_batch(self, max_items: int) -> list[T]:
        """Up to ``max_items`` items in dispatch order (as repeated :meth:`pop` would give)."""
        out: list[T] = []
        room = max_items
        queues = self._queues
        while room > 0 and self._mask:
            priority = self._mask.bit_length() - 1
            queue = queues[priority]
            if len(queue) <= room:
                room -= len(queue)
                out.extend(queue)
                queue.clear()
                self._mask &= ~(1 << priority)
            else:
                popleft = queue.popleft
                out.extend([popleft() for _ in range(room)])
                room = 0
        self._count -= len(out)
        return out

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def len_priority(self, priority: int) -> int:
        """Items queued at ``priority``."""
        return len(self._queues[priority])

    @property
    def dropped(self) -> int:
        return sum(self._dropped)

    def dropped_by_priority(self) -> dict[int, int]:
        return {p: self._dropped[p] for p in _PRIORITIES}

    def stats(self) -> dict[str, Any]:
        return {
            "queued": self._count,
            "maxsize": self._maxsize,
            "dropped": self.dropped,
            "dropped_by_priority": self.dropped_by_priority(),
            "overflow_critical": self.overflow_critical,
            "high_water": self.high_water,
        }

    def __repr__(self) -> str:
        return (
            f"DispatchQueue(queued={self._count}, maxsize={self._maxsize}, "
            f"dropped={self.dropped}, overflow_critical={self.overflow_critical})"
        )
