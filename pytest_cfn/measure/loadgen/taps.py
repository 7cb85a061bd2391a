"""Delivery accounting without a Python object per delivery: taps on the subscribing buses.

Theory of operation. Every subscribing Event Bus (or Messenger) of the harness gets one *tap*
as its first handler. For each event the tap appends four machine integers to preallocated
arrays (``array.array``: no object stays alive per event): receive time minus intended send
time, receive time minus publish time, a code (event type, measured flag, priority) and a
weight, the number of local agents whose handlers the bus calls for it after the tap.

* Per-agent model: the tap *is* the agent's handler (weight 1); its counts are the agent's.
* Shared model: one tap per shared bus; each agent's own handler is its list's ``append``
  (a C call, no Python frame). At every drain an agent that got exactly as many events as
  the tap saw (the bus calls every handler of an event in one go, in registration order, so
  it got the same events) is credited the tap's counts; any other agent is counted item by
  item from its list. Counts therefore stay exact, delivery by delivery; the receive time is
  read once per event, at the tap, just before the bus calls the agents' handlers.

Each tap is also a preemption point of the process's pacing loop: having read the clock, it
compares it with the loop's :class:`~pytest_cfn.measure.loadgen.pacing.Deadline` and, once
that has passed, lets the loop take its due sends there (see ``pacing``).

``drain`` moves what a tap has gathered into numpy arrays (a memcpy) and clears it;
:class:`~pytest_cfn.measure.loadgen.accounting.DeliveryRecorder` folds those into HdrHistograms and
Locust rows in slices.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pytest_cfn.measure.loadgen.accounting import (
    PRIORITIES,
    WHOLE_MS_BELOW_NS,
    DeliveryRecorder,
    LocustRow,
    SubscriberTally,
)
from pytest_cfn.measure.loadgen.pacing import Deadline

time_ns = time.time_ns
Int64s = npt.NDArray[np.int64]
TYPE_SHIFT = 5
MEASURED_BIT = 1 << 4
PRIORITY_MASK = 0xF
MAX_TYPES = 1 << (31 - TYPE_SHIFT)


class TypeCodes(dict[str, int]):
    """Event type -> code (its index << TYPE_SHIFT); a new type gets the next index."""

    def __init__(self, message_types: set[str] | frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.names: list[str] = []
        self.kinds: list[str] = []
        self.message_types = set(message_types)

    def __missing__(self, name: str) -> int:
        if len(self.names) >= MAX_TYPES:
            raise OverflowError(f"more than {MAX_TYPES} event types; the harness counts fewer")
        code = len(self.names) << TYPE_SHIFT
        self.names.append(name)
        self.kinds.append("message" if name in self.message_types else "deliver")
        self[name] = code
        return code

    def message(self, name: str) -> int:
        """The code of a Messenger message kind (always counted as ``message``)."""
        code = self.get(name)
        if code is None:
            self.message_types.add(name)
            code = self[name]
        return code

    def key(self, index: int) -> tuple[str, str]:
        """(request type, name) of a type index, as Locust's rows and the snapshot use."""
        return self.kinds[index], self.names[index]


@dataclass
class TapBatch:
    """What one drain took from one or more taps: parallel int64 arrays."""

    latency: Int64s
    transit: Int64s
    codes: Int64s
    weights: Int64s

    @classmethod
    def join(cls, batches: list[TapBatch]) -> TapBatch:
        return cls(*(np.concatenate([getattr(b, f) for b in batches]) for f in
                     ("latency", "transit", "codes", "weights")))

    def measured(self) -> TapBatch:
        keep = (self.codes & MEASURED_BIT) != 0
        return TapBatch(self.latency[keep], self.transit[keep], self.codes[keep],
                        self.weights[keep])

    def __len__(self) -> int:
        return int(self.codes.size)


def _taken(values: array[int]) -> Int64s:
    copied = np.array(values, dtype=np.int64)
    del values[:]
    return copied


class DeliveryTap:
    """The first handler of one subscribing bus or messenger (see the module docstring)."""

    __slots__ = ("_listeners", "_weight", "codes", "deadline", "latency", "own", "transit",
                 "type_codes", "weights")

    def __init__(
        self,
        type_codes: TypeCodes,
        own: SubscriberTally | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self.type_codes = type_codes
        self.own = own
        self.deadline = deadline or Deadline()
        self.latency: array[int] = array("q")
        self.transit: array[int] = array("q")
        self.codes: array[int] = array("l")
        self.weights: array[int] = array("l")
        self._weight = [1 if own is not None else 0]
        self._listeners: list[tuple[SubscriberTally, list[Any], bool]] = []

    def on_event(self) -> Callable[[Any], None]:
        """The handler for an Event Bus: ``handler(event)``."""
        lat, transit = self.latency.append, self.transit.append
        code, weight = self.codes.append, self.weights.append
        codes, cell = self.type_codes, self._weight
        deadline = self.deadline
        due = deadline.due

        def tap_event(event: Any) -> None:
            data = event.data
            now = time_ns()
            lat(now - data["t"])
            transit(now - event.ts)
            code(codes[event.type] | (data["m"] << 4) | event.priority)
            weight(cell[0])
            if now >= due[0]:
                deadline.catch_up(now)

        return tap_event

    def on_message(self) -> Callable[[Any], None]:
        """The handler for a Messenger: ``handler(message)``; the kind is ``data["k"]``."""
        lat, transit = self.latency.append, self.transit.append
        code, weight = self.codes.append, self.weights.append
        codes, cell = self.type_codes, self._weight
        message_code = codes.message
        deadline = self.deadline
        due = deadline.due

        def tap_message(message: Any) -> None:
            envelope = message.envelope
            data = envelope.data
            now = time_ns()
            lat(now - data["t"])
            transit(now - envelope.ts)
            kind = data["k"]
            c = codes.get(kind)
            if c is None:
                c = message_code(kind)
            code(c | (data["m"] << 4) | envelope.priority)
            weight(cell[0])
            if now >= due[0]:
                deadline.catch_up(now)

        return tap_message

    def add_listener(self, tally: SubscriberTally, *, messages: bool = False) -> list[Any]:
        """A local agent behind this tap: returns the list whose ``append`` is its handler.

        The weight counts it from now on; register the handler before any event can pass
        (subscribing to a pattern the bus already holds does not yield).
        """
        received: list[Any] = []
        self._listeners.append((tally, received, messages))
        self._weight[0] += 1
        return received

    def remove_listener(self, received: list[Any]) -> None:
        """The agent's handler is gone: count what it got, stop weighting it."""
        for i, (tally, mine, messages) in enumerate(self._listeners):
            if mine is received:
                _count_items(tally, mine, messages)
                del self._listeners[i]
                self._weight[0] -= 1
                return

    def count(self) -> TapBatch | None:
        """Credit every listener with what reached it since the last call, and take the
        tap's arrays (None when nothing arrived)."""
        n = len(self.codes)
        if not n:
            for tally, received, messages in self._listeners:
                if received:
                    _count_items(tally, received, messages)
            return None
        batch = TapBatch(_taken(self.latency), _taken(self.transit), _taken(self.codes),
                         _taken(self.weights))
        codes = batch.codes
        measured = codes[(codes & MEASURED_BIT) != 0] & PRIORITY_MASK
        by_priority = np.bincount(measured, minlength=PRIORITIES).tolist()
        if self.own is not None:
            _credit(self.own, n, by_priority)
        for tally, received, messages in self._listeners:
            if len(received) == n:
                _credit(tally, n, by_priority)
                del received[:]
            else:
                _count_items(tally, received, messages)
        return batch


def _credit(tally: SubscriberTally, arrivals: int, by_priority: list[int]) -> None:
    tally.arrivals += arrivals
    got = tally.received
    for p in range(1, PRIORITIES):
        got[p] += by_priority[p]


def _count_items(tally: SubscriberTally, received: list[Any], messages: bool) -> None:
    """The exact path: count one agent's deliveries one by one (rare: an agent that joined
    or left between two drains)."""
    got = tally.received
    for item in received:
        envelope = item.envelope if messages else item
        tally.arrivals += 1
        if envelope.data["m"]:
            got[envelope.priority] += 1
    del received[:]


SLICE = 20_000  # values folded between two pauses: about 0.5 ms of numpy work here


def fold(
    recorder: DeliveryRecorder,
    batch: TapBatch,
    type_codes: TypeCodes,
    bucket: Callable[[float], int],
    pause: Callable[[], None] | None = None,
) -> list[LocustRow]:
    """Fold a drained batch's measured deliveries into the recorder's HdrHistograms (latency
    per (kind, type), transit) and return one Locust row per (kind, type), in slices of
    SLICE values, with ``pause()`` after every histogram's share of a slice, so the loop is
    never held for long (measured in a loaded 50-agent process: a whole 10,000-value slice
    with its dozen event types held the loop 3-15 ms)."""
    pause = pause or _no_pause
    measured = batch.measured()
    rows: dict[int, LocustRow] = {}
    for start in range(0, len(measured), SLICE):
        part = TapBatch(*(getattr(measured, f)[start:start + SLICE] for f in
                          ("latency", "transit", "codes", "weights")))
        pause()
        recorder.transit.record_array(part.transit, part.weights)
        types = part.codes >> TYPE_SHIFT
        for index in np.unique(types).tolist():
            pause()
            pick = types == index
            values, weights = part.latency[pick], part.weights[pick]
            key = type_codes.key(index)
            histogram = recorder.histogram(key)
            histogram.record_array(values, weights)
            _add_row(rows, index, key, values, weights, bucket)
        pause()
    recorder.deliveries += int(measured.weights.sum())
    return list(rows.values())


def _no_pause() -> None:
    return None


def warm_up_fold(bucket: Callable[[float], int]) -> None:
    """Fold a made-up batch into a throwaway recorder, once per process before its window:
    the first fold of a process runs numpy's lazy imports (``numpy.ma``, from ``np.unique``),
    measured at 7-8 ms of a loop held at once, where every delivery would wait for it."""
    codes = TypeCodes()
    code = codes["warm-up"] | MEASURED_BIT | 1
    values = np.array([1_000, WHOLE_MS_BELOW_NS + 1_000], dtype=np.int64)
    batch = TapBatch(values, values.copy(), np.array([code, code], dtype=np.int64),
                     np.ones(2, dtype=np.int64))
    fold(DeliveryRecorder(), batch, codes, bucket)


def _add_row(
    rows: dict[int, LocustRow],
    index: int,
    key: tuple[str, str],
    values: Int64s,
    weights: Int64s,
    bucket: Callable[[float], int],
) -> None:
    count = int(weights.sum())
    if not count:
        return
    buckets: dict[int, int] = {}
    small = values < WHOLE_MS_BELOW_NS
    if small.any():
        ms = (values[small] + 500_000) // 1_000_000
        by_ms = np.bincount(ms, weights=weights[small]).astype(np.int64)
        for ms_value in np.flatnonzero(by_ms).tolist():
            buckets[ms_value] = int(by_ms[ms_value])
    if not small.all():
        large_us, inverse = np.unique(values[~small] // 1000, return_inverse=True)
        by_us = np.bincount(inverse, weights=weights[~small]).astype(np.int64)
        for us_value, n in zip(large_us.tolist(), by_us.tolist(), strict=True):
            b = bucket(us_value / 1000.0)
            buckets[b] = buckets.get(b, 0) + int(n)
    positive = weights > 0
    total_ms = float((values * weights).sum()) / 1e6
    low, high = float(values[positive].min()) / 1e6, float(values[positive].max()) / 1e6
    row = rows.get(index)
    if row is None:
        rows[index] = LocustRow(key[0], key[1], count, total_ms, low, high, buckets)
        return
    row.count += count
    row.total_ms += total_ms
    row.min_ms = min(row.min_ms, low)
    row.max_ms = max(row.max_ms, high)
    for b, n in buckets.items():
        row.buckets[b] = row.buckets.get(b, 0) + n
