"""Per-publisher sequence tracking: loss, duplicates and reordering as figures.

Redis pub/sub is at-most-once, and redis-py re-subscribes after a reconnect
without a word, so loss has to be detected from the messages themselves. Each
envelope carries ``(publisher, seq)`` with seq counting 1, 2, 3... per
publisher; this module classifies each arrival:

- NEW: the next expected seq (the in-order path: one dict lookup, one compare).
- GAP: ahead of the expected seq by at most ``max_jump``. The skipped numbers
  are counted as ``lost`` and remembered as missing, so a late arrival can be
  recognised.
- REORDERED: one of the remembered missing numbers arrived after all. It is
  delivered, and ``lost`` goes down by one.
- DUPLICATE: below the expected seq, not missing, and at or above the
  publisher's *floor*: that very seq was delivered (a retried publish, a double
  subscription). Drop it.
- ANOMALY: an implausible seq, more than ``max_jump`` ahead of the expected one
  or more than ``max_jump`` below the floor (a forged envelope, a publisher
  that was restarted under the same id). It is delivered, counted as
  ``anomalies``, and does not move the tracker, so one forged envelope with
  seq 10**12 cannot make the genuine stream look like duplicates, nor make
  ``lost`` jump. Only when ``confirm`` consecutive seqs (s, s+1, s+2...) arrive
  out there does the tracker re-synchronise to them (``resyncs``; a genuine
  stream after a long outage does that at once); a forward re-sync counts the
  gap as lost, and a later re-sync back undoes what it added.

Theory of the floor: every seq from the floor up to the expected one is either
delivered or remembered as missing, so the DUPLICATE verdict is exact there.
The floor rises only when remembered missing numbers are forgotten (see below);
a seq just below it (within ``max_jump``) cannot be told from a repeat and is
taken for a duplicate, as before.

A publisher first seen at seq > 1 means this subscriber started late: the
earlier numbers are counted as ``late_start_skipped``, not as lost. They are
remembered (up to ``window`` of them) so a message published just before the
subscriber started but delivered just after is not mistaken for a duplicate.

Memory per publisher is bounded: at most ``window`` missing numbers are
remembered, as ranges. When more are missing the oldest are forgotten; they
stay counted as lost, and the floor moves above them. ``max_jump`` defaults to
the window (at least 1,024), so one plausible gap always fits in memory and a
forged plausible jump cannot push genuine seqs out of it.
"""

from __future__ import annotations

from bisect import bisect_right
from enum import IntEnum
from operator import itemgetter
from typing import Any

from pytest_cfn._errors import InvalidOptionError

DEFAULT_WINDOW = 1024
DEFAULT_CONFIRM = 3


class Verdict(IntEnum):
    """What to do with an arrival: deliver all but DUPLICATE."""

    NEW = 0
    GAP = 1
    DUPLICATE = 2
    REORDERED = 3
    ANOMALY = 4


_NEW = Verdict.NEW
_GAP = Verdict.GAP
_DUPLICATE = Verdict.DUPLICATE
_REORDERED = Verdict.REORDERED
_ANOMALY = Verdict.ANOMALY

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

    def add(self, first: int, last: int, counted: int, window: int) -> int:
        """Remember ``first..last``; ranges only ever arrive above all remembered ones.

        Returns the new floor when older numbers had to be forgotten, else 0."""
        floor = 0
        if last - first + 1 > window:
            first = floor = last - window + 1
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
            floor = ranges[0][0]
        return floor

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


def _check_count(name: str, value: object, minimum: int, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOptionError(
            f"sequence {name} must be an integer >= {minimum} ({meaning}), got {value!r}"
        )
    return value


class SequenceTracker:
    """Classifies ``(publisher, seq)`` arrivals and keeps the totals (see the module docstring)."""

    __slots__ = (
        "_candidates",
        "_confirm",
        "_floor",
        "_late_start",
        "_max_jump",
        "_missing",
        "_next",
        "_resync_lost",
        "_window",
        "anomalies",
        "duplicates",
        "late_start_skipped",
        "lost",
        "received",
        "reordered",
        "resyncs",
    )

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        *,
        max_jump: int | None = None,
        confirm: int = DEFAULT_CONFIRM,
    ) -> None:
        self._window = _check_count("window", window, 0, "missing seqs remembered per publisher")
        if max_jump is None:
            max_jump = max(window, DEFAULT_WINDOW)
        self._max_jump = _check_count(
            "max_jump", max_jump, 1, "the largest gap taken as plausible"
        )
        self._confirm = _check_count(
            "confirm", confirm, 1, "consecutive implausible seqs that re-synchronise"
        )
        self._next: dict[str, int] = {}
        self._missing: dict[str, _Missing] = {}
        self._floor: dict[str, int] = {}
        self._candidates: dict[str, list[int]] = {}
        self._resync_lost: dict[str, int] = {}
        self._late_start: dict[str, int] = {}
        self.received = 0
        self.lost = 0
        self.duplicates = 0
        self.reordered = 0
        self.late_start_skipped = 0
        self.anomalies = 0
        self.resyncs = 0

    @property
    def window(self) -> int:
        return self._window

    @property
    def max_jump(self) -> int:
        return self._max_jump

    @property
    def next_seq(self) -> dict[str, int]:
        """publisher -> the seq expected next. A caller checking a chunk may take the
        in-order path itself, as :meth:`observe` does: when ``seq == next_seq.get(p)``,
        set ``next_seq[p] = seq + 1`` and add one to ``received``; anything else goes
        to :meth:`observe`."""
        return self._next

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
            self._start(publisher, seq)
            return _NEW
        if seq > expected:
            if seq - expected > self._max_jump:
                return self._anomaly(publisher, seq, expected)
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
        if self._floor.get(publisher, 1) - seq > self._max_jump:
            return self._anomaly(publisher, seq, expected)
        self.duplicates += 1
        return _DUPLICATE

    def _start(self, publisher: str, seq: int) -> None:
        self._next[publisher] = seq + 1
        if seq > 1:
            self.late_start_skipped += seq - 1
            self._late_start[publisher] = seq - 1
            self._remember(publisher, 1, seq - 1, 0)

    def _anomaly(self, publisher: str, seq: int, expected: int) -> Verdict:
        """An implausible seq: delivered and counted; the tracker moves only once
        ``confirm`` consecutive seqs have arrived out there."""
        candidate = self._candidates.get(publisher)
        if candidate is not None and candidate[1] <= seq < candidate[0]:
            self.duplicates += 1
            return _DUPLICATE
        self.anomalies += 1
        if candidate is not None and seq == candidate[0]:
            candidate[0] += 1
        else:
            candidate = self._candidates[publisher] = [seq + 1, seq]
        if candidate[0] - candidate[1] >= self._confirm:
            self._resync(publisher, candidate[1], candidate[0], expected)
        return _ANOMALY

    def _resync(self, publisher: str, first: int, following: int, expected: int) -> None:
        del self._candidates[publisher]
        self.resyncs += 1
        if first > expected:
            gap = first - expected
            self.lost += gap
            self._resync_lost[publisher] = self._resync_lost.get(publisher, 0) + gap
            self._next[publisher] = following
            self._remember(publisher, expected, first - 1, 1)
            return
        # Back below the floor: the stream we followed was not this publisher's.
        undo = min(self._resync_lost.pop(publisher, 0), self.lost)
        self.lost -= undo
        late = self._late_start.pop(publisher, 0) - (first - 1)
        if late > 0:
            self.late_start_skipped -= min(late, self.late_start_skipped)
        self._missing.pop(publisher, None)
        self._floor[publisher] = first
        self._next[publisher] = following

    def _remember(self, publisher: str, first: int, last: int, counted: int) -> None:
        if not self._window:
            self._floor[publisher] = last + 1
            return
        missing = self._missing.get(publisher)
        if missing is None:
            missing = self._missing[publisher] = _Missing()
        floor = missing.add(first, last, counted, self._window)
        if floor:
            self._floor[publisher] = floor

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
        self._floor.pop(publisher, None)
        self._candidates.pop(publisher, None)
        self._resync_lost.pop(publisher, None)
        self._late_start.pop(publisher, None)
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
            "anomalies": self.anomalies,
            "resyncs": self.resyncs,
            "publishers": len(self._next),
            "missing_remembered": sum(m.size for m in self._missing.values()),
        }

    def __repr__(self) -> str:
        return (
            f"SequenceTracker(publishers={len(self._next)}, received={self.received}, "
            f"lost={self.lost}, duplicates={self.duplicates}, reordered={self.reordered})"
        )
