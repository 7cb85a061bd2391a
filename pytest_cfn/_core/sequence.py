"""Per-publisher sequence tracking: loss, duplicates and reordering as figures.

Redis pub/sub is at-most-once, and redis-py re-subscribes after a reconnect
without a word, so loss has to be detected from the messages themselves. Each
envelope carries ``(publisher, seq)`` with seq counting 1, 2, 3... per
publisher; this module classifies each arrival:

- NEW: the next expected seq (the in-order path: one dict lookup, one compare).
- GAP: ahead of the expected seq. The skipped numbers are counted as ``lost``
  and remembered as missing, so a late arrival can be recognised.
- REORDERED: one of the remembered missing numbers arrived after all. It is
  delivered, and ``lost`` goes down by one.
- DUPLICATE: at or below the expected seq and not missing: already seen (a
  retried publish, a double subscription). Drop it.

A publisher first seen at seq > 1 means this subscriber started late: the
earlier numbers are counted as ``late_start_skipped``, not as lost. They are
remembered (up to ``window`` of them) so a message published just before the
subscriber started but delivered just after is not mistaken for a duplicate.

Memory per publisher is bounded: at most ``window`` missing numbers are
remembered, as ranges. When more are missing the oldest are forgotten; they
stay counted as lost, and if one of them does arrive it is taken for a
duplicate, since it can no longer be told apart from one.
"""

from __future__ import annotations

from bisect import bisect_right
from enum import IntEnum
from operator import itemgetter
from typing import Any

from pytest_cfn._errors import InvalidOptionError

DEFAULT_WINDOW = 1024


class Verdict(IntEnum):
    """What to do with an arrival: deliver NEW, GAP and REORDERED; drop DUPLICATE."""

    NEW = 0
    GAP = 1
    DUPLICATE = 2
    REORDERED = 3


_NEW = Verdict.NEW
_GAP = Verdict.GAP
_DUPLICATE = Verdict.DUPLICATE
_REORDERED = Verdict.REORDERED

_first = itemgetter(0)


class _Missing:
    """The missing seqs of one publisher, as ``[first, last, counted]`` ranges in seq order.

    ``counted`` is 1 for numbers counted as lost (a gap) and 0 for numbers from
    before this subscriber's first message (a late start).
    """

    __slots__ = ("ranges", "size")

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []
        self.size = 0

    def add(self, first: int, last: int, counted: int, window: int) -> None:
        """Remember ``first..last``; ranges only ever arrive above all remembered ones."""
        if last - first + 1 > window:
            first = last - window + 1
        self.ranges.append([first, last, counted])
        self.size += last - first + 1
        excess = self.size - window
        ranges = self.ranges
        while excess > 0:
            oldest = ranges[0]
            n = oldest[1] - oldest[0] + 1
            if n <= excess:
                del ranges[0]
                self.size -= n
                excess -= n
            else:
                oldest[0] += excess
                self.size -= excess
                excess = 0

    def take(self, seq: int) -> int | None:
        """Remove ``seq`` if remembered; its ``counted`` flag, or None if it was not missing."""
        ranges = self.ranges
        i = bisect_right(ranges, seq, key=_first) - 1
        if i < 0:
            return None
        found = ranges[i]
        first, last, counted = found
        if seq > last:
            return None
        if first == last:
            del ranges[i]
        elif seq == first:
            found[0] = seq + 1
        elif seq == last:
            found[1] = seq - 1
        else:
            found[1] = seq - 1
            ranges.insert(i + 1, [seq + 1, last, counted])
        self.size -= 1
        return counted


class SequenceTracker:
    """Classifies ``(publisher, seq)`` arrivals and keeps the totals (see the module docstring)."""

    __slots__ = (
        "_missing",
        "_next",
        "_window",
        "duplicates",
        "late_start_skipped",
        "lost",
        "received",
        "reordered",
    )

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise InvalidOptionError(
                f"sequence window must be an integer >= 0 (missing seqs remembered per "
                f"publisher), got {window!r}"
            )
        self._window = window
        self._next: dict[str, int] = {}
        self._missing: dict[str, _Missing] = {}
        self.received = 0
        self.lost = 0
        self.duplicates = 0
        self.reordered = 0
        self.late_start_skipped = 0

    @property
    def window(self) -> int:
        return self._window

    def observe(self, publisher: str, seq: int) -> Verdict:
        """Classify one arrival and update the totals."""
        self.received += 1
        expected = self._next.get(publisher)
        if seq == expected:
            self._next[publisher] = seq + 1
            return _NEW
        return self._observe_out_of_line(publisher, seq, expected)

    def _observe_out_of_line(self, publisher: str, seq: int, expected: int | None) -> Verdict:
        if expected is None:
            self._next[publisher] = seq + 1
            if seq > 1:
                self.late_start_skipped += seq - 1
                self._remember(publisher, 1, seq - 1, 0)
            return _NEW
        if seq > expected:
            self._next[publisher] = seq + 1
            self.lost += seq - expected
            self._remember(publisher, expected, seq - 1, 1)
            return _GAP
        missing = self._missing.get(publisher)
        if missing is not None:
            counted = missing.take(seq)
            if counted is not None:
                if not missing.size:
                    del self._missing[publisher]
                self.reordered += 1
                if counted:
                    self.lost -= 1
                else:
                    self.late_start_skipped -= 1
                return _REORDERED
        self.duplicates += 1
        return _DUPLICATE

    def _remember(self, publisher: str, first: int, last: int, counted: int) -> None:
        if not self._window:
            return
        missing = self._missing.get(publisher)
        if missing is None:
            missing = self._missing[publisher] = _Missing()
        missing.add(first, last, counted, self._window)

    def expected(self, publisher: str) -> int | None:
        """The next seq expected from ``publisher``, or None if it has not been seen."""
        return self._next.get(publisher)

    def lost_ranges(self, publisher: str) -> list[tuple[int, int]]:
        """Outstanding ``(first, last)`` ranges counted as lost and still remembered, for replay."""
        missing = self._missing.get(publisher)
        if missing is None:
            return []
        return [(r[0], r[1]) for r in missing.ranges if r[2]]

    def reset_publisher(self, publisher: str) -> bool:
        """Forget ``publisher`` (the totals are kept); True if it was known."""
        self._missing.pop(publisher, None)
        return self._next.pop(publisher, None) is not None

    def __len__(self) -> int:
        return len(self._next)

    def stats(self) -> dict[str, Any]:
        """Totals. ``received`` counts every arrival, duplicates included."""
        return {
            "received": self.received,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "late_start_skipped": self.late_start_skipped,
            "publishers": len(self._next),
            "missing_remembered": sum(m.size for m in self._missing.values()),
        }

    def __repr__(self) -> str:
        return (
            f"SequenceTracker(publishers={len(self._next)}, received={self.received}, "
            f"lost={self.lost}, duplicates={self.duplicates}, reordered={self.reordered})"
        )
