"""Latency histograms in nanoseconds over HdrHistogram, cheap to record and mergeable anywhere.

Theory of operation: hdrh's `record_value` is pure Python and costs about 0.9 µs a call, too
much for one call per delivered message at 150k msgs/s. `record()` therefore only clamps and
appends to a local buffer; the buffer is folded into hdrh's counts array in bulk (hdrh's own
bucket arithmetic, vectorised in one comprehension). Every read folds the buffer first, so
results are exactly what hdrh's record_value would have produced.

A histogram has one writer: record from one thread and merge() histograms across threads,
processes and xdist workers (`encode()` gives plain text that travels anywhere).

Quirks of hdrhistogram 0.10 worked around here: `add()` sets the minimum to 0 when the other
histogram is empty; `get_percentile_to_value_dict()` returns {} on an empty histogram;
`get_mean_value()` walks an iterator at about 50 ms per call; `encode()` returns bytes.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any, TypedDict

from hdrh.histogram import HdrHistogram

from pytest_cfn._errors import InvalidHistogramError, InvalidOptionError

LOWEST_NS = 1
HIGHEST_NS = 60_000_000_000
SIGNIFICANT_DIGITS = 3

_FLUSH_AT = 8192
_MAX_INLINE_SYNTHETIC = 64
_REPORTED_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


class LatencyPercentiles(TypedDict):
    """Summary of a histogram in nanoseconds (HDR convention: a percentile is its bucket's top)."""

    p50: int
    p90: int
    p99: int
    p99_9: int
    max: int
    min: int
    mean: float


def _new_hdr() -> HdrHistogram:
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)


def _index_params(hdr: HdrHistogram) -> tuple[int, int, int, int]:
    """Constants (mask, base, magnitude, offset) of hdrh's _counts_index_for, precomputed.

    A value v lands at index (s << magnitude) + (v >> s) + offset, s = bit_length(v | mask) - base.
    """
    unit: int = hdr.unit_magnitude
    magnitude: int = hdr.sub_bucket_half_count_magnitude
    half: int = hdr.sub_bucket_half_count
    return hdr.sub_bucket_mask, magnitude + 1, magnitude, ((1 - unit) << magnitude) - half


class LatencyHistogram:
    """Latencies in integer nanoseconds, 1 ns to 60 s at 3 significant digits."""

    __slots__ = ("_clamped", "_hdr", "_index_params", "_pending", "_synthetic")

    def __init__(self) -> None:
        self._hdr: HdrHistogram = _new_hdr()
        self._pending: list[int] = []
        self._clamped = 0
        self._synthetic = 0
        self._index_params = _index_params(self._hdr)

    @property
    def count(self) -> int:
        """Number of values recorded, synthetic (coordinated-omission) ones included."""
        return int(self._hdr.get_total_count()) + len(self._pending)

    @property
    def clamped(self) -> int:
        """Number of values outside 1 ns .. 60 s that were recorded at the nearest bound."""
        return self._clamped

    @property
    def synthetic(self) -> int:
        """Number of values added by record_corrected() for coordinated omission."""
        return self._synthetic

    def record(self, ns: int) -> None:
        """Record one latency; out-of-range values are clamped and counted, never raised."""
        if ns < LOWEST_NS or ns > HIGHEST_NS:
            ns = self._clamp(ns)
        pending = self._pending
        pending.append(ns)
        if len(pending) >= _FLUSH_AT:
            self._flush()

    def record_many(self, values: Iterable[int]) -> None:
        """Record many latencies at once; the cheapest path per value."""
        batch = list(values)
        if not batch:
            return
        if min(batch) < LOWEST_NS or max(batch) > HIGHEST_NS:
            batch = [v if LOWEST_NS <= v <= HIGHEST_NS else self._clamp(v) for v in batch]
        self._fold(batch)

    def record_array(self, values: Any, weights: Any = None) -> None:
        """Record a numpy array of latencies (ns), each ``weights[i]`` times (default once).

        The bulk path of the load harness: hdrh's bucket arithmetic vectorised with numpy
        (bit length from ``frexp``'s exponent, exact below 2**53) and added into hdrh's counts
        array through a numpy view, so a 20,000-value slice costs well under a millisecond.
        Out-of-range values are clamped and counted, as :meth:`record` does.
        """
        import numpy as np

        v = np.asarray(values, dtype=np.int64)
        if not v.size:
            return
        w = None if weights is None else np.asarray(weights, dtype=np.int64)
        if w is not None:
            keep = w > 0
            if not keep.all():
                v, w = v[keep], w[keep]
                if not v.size:
                    return
        low, high = int(v.min()), int(v.max())
        if low < LOWEST_NS or high > HIGHEST_NS:
            out = (v < LOWEST_NS) | (v > HIGHEST_NS)
            self._clamped += int(out.sum() if w is None else w[out].sum())
            v = np.clip(v, LOWEST_NS, HIGHEST_NS)
            low, high = max(low, LOWEST_NS), min(high, HIGHEST_NS)
        self._flush()
        mask, base, magnitude, offset = self._index_params
        shift = np.frexp((v | mask).astype(np.float64))[1].astype(np.int64) - base
        indexes = (shift << magnitude) + (v >> shift) + offset
        counts = np.bincount(indexes, weights=w).astype(np.int64) if w is not None else (
            np.bincount(indexes)
        )
        hdr = self._hdr
        view = np.ctypeslib.as_array(hdr.counts)
        view[: counts.size] += counts.astype(view.dtype)
        hdr.total_count += int(v.size if w is None else w.sum())
        hdr.min_value = min(hdr.min_value, low)
        hdr.max_value = max(hdr.max_value, high)

    def record_corrected(self, ns: int, expected_interval_ns: int) -> None:
        """Record a latency measured at a fixed send rate, correcting for coordinated omission.

        As HdrHistogram's recordValueWithExpectedInterval and wrk2 do: a value longer than the
        expected interval also records v - i, v - 2i, ... down to the last value above 0, the
        latencies the requests that should have been sent meanwhile would have seen.
        """
        if ns < LOWEST_NS or ns > HIGHEST_NS:
            ns = self._clamp(ns)
        self._pending.append(ns)
        if expected_interval_ns > 0 and ns > expected_interval_ns:
            missed = (ns - 1) // expected_interval_ns
            self._synthetic += missed
            if missed <= _MAX_INLINE_SYNTHETIC:
                self._pending.extend(range(ns - expected_interval_ns, 0, -expected_interval_ns))
            else:
                self._record_progression(
                    ns - missed * expected_interval_ns,
                    ns - expected_interval_ns,
                    expected_interval_ns,
                )
        if len(self._pending) >= _FLUSH_AT:
            self._flush()

    def percentile(self, p: float) -> int:
        """Value in ns at percentile p (0..100); 0 when the histogram is empty."""
        if not 0.0 <= p <= 100.0:
            raise InvalidOptionError(f"percentile {p!r} is out of range; use 0 to 100")
        self._flush()
        if not self._hdr.get_total_count():
            return 0
        return int(self._hdr.get_value_at_percentile(p))

    def percentiles(self) -> LatencyPercentiles:
        """p50, p90, p99, p99.9, max, min and mean in ns, from one pass; zeros when empty."""
        self._flush()
        hdr = self._hdr
        if not hdr.get_total_count():
            return LatencyPercentiles(p50=0, p90=0, p99=0, p99_9=0, max=0, min=0, mean=0.0)
        values = hdr.get_percentile_to_value_dict([p for _, p in _REPORTED_PERCENTILES])
        return LatencyPercentiles(
            p50=int(values[50.0]),
            p90=int(values[90.0]),
            p99=int(values[99.0]),
            p99_9=int(values[99.9]),
            max=int(hdr.get_max_value()),
            min=int(hdr.get_min_value()),
            mean=self._mean(),
        )

    def merge(self, other: LatencyHistogram) -> None:
        """Add every value of `other` into this histogram (other is left unchanged)."""
        self._flush()
        other._flush()
        own, theirs = self._hdr, other._hdr
        mins = [h.min_value for h in (own, theirs) if h.get_total_count()]
        own.add(theirs)
        own.min_value = min(mins) if mins else sys.maxsize
        self._clamped += other._clamped
        self._synthetic += other._synthetic

    def reset(self) -> None:
        """Forget every recorded value and counter."""
        self._hdr = _new_hdr()
        self._pending = []
        self._clamped = 0
        self._synthetic = 0

    def encode(self) -> str:
        """HdrHistogram's compressed base64 form (V2 histoblob), readable by any HDR port.

        The clamped and synthetic counters are not part of the HDR format; ship to_dict() for them.
        """
        self._flush()
        encoded: bytes = self._hdr.encode()
        return encoded.decode("ascii")

    @classmethod
    def decode(cls, encoded: str | bytes) -> LatencyHistogram:
        """Rebuild a histogram from encode() output; counters not in the HDR form start at 0."""
        try:
            hdr = HdrHistogram.decode(encoded)
        # hdrh raises a mix of binascii, zlib, ctypes and its own exceptions for bad input.
        except Exception as exc:
            raise InvalidHistogramError(
                f"not an encoded HdrHistogram ({type(exc).__name__}: {exc}); "
                "pass the text returned by LatencyHistogram.encode()"
            ) from exc
        layout = (hdr.lowest_trackable_value, hdr.highest_trackable_value, hdr.significant_figures)
        if layout != (LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS):
            raise InvalidHistogramError(
                f"encoded histogram covers {layout[0]}..{layout[1]} at {layout[2]} digits; "
                f"expected {LOWEST_NS}..{HIGHEST_NS} ns at {SIGNIFICANT_DIGITS} digits"
            )
        histogram = cls()
        histogram._hdr = hdr
        return histogram

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: counters, percentiles in microseconds (float) and `encoded`."""
        summary = self.percentiles()
        result: dict[str, Any] = {
            "count": self.count,
            "clamped": self._clamped,
            "synthetic": self._synthetic,
        }
        for key in ("p50", "p90", "p99", "p99_9", "max", "min", "mean"):
            result[f"{key}_us"] = summary[key] / 1000.0
        result["encoded"] = self.encode()
        return result

    def cdf(self, points: int = 200) -> list[tuple[float, float]]:
        """At most `points` (value_us, fraction of values <= value) pairs, for plotting a CDF.

        Points are spread evenly over the recorded buckets (which are log-spaced in value), so
        the tail keeps its detail; the first and the last (fraction 1.0) bucket are always kept.
        """
        if points < 2:
            raise InvalidOptionError(f"cdf needs points >= 2, got {points!r}")
        self._flush()
        total = int(self._hdr.get_total_count())
        if not total:
            return []
        steps: list[tuple[float, float]] = []
        cumulative = 0
        for index, count in self._nonzero_counts():
            cumulative += count
            top = self._hdr.get_highest_equivalent_value(self._hdr.get_value_from_index(index))
            steps.append((top / 1000.0, cumulative / total))
        if len(steps) <= points:
            return steps
        last = len(steps) - 1
        picked = sorted({round(i * last / (points - 1)) for i in range(points)})
        return [steps[i] for i in picked]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.encode(), self._clamped, self._synthetic))

    def __repr__(self) -> str:
        summary = self.percentiles()
        return (
            f"LatencyHistogram(count={self.count}, p50_us={summary['p50'] / 1000:.1f}, "
            f"p99_us={summary['p99'] / 1000:.1f}, max_us={summary['max'] / 1000:.1f})"
        )

    def _clamp(self, ns: int) -> int:
        self._clamped += 1
        return LOWEST_NS if ns < LOWEST_NS else HIGHEST_NS

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self._fold(pending)

    def _fold(self, values: list[int]) -> None:
        """Add in-range values straight into hdrh's counts array, grouped by bucket index.

        This is hdrh's own indexing (bucket = bit length of v | mask, sub-bucket = v >> bucket)
        with the shifts precomputed; the tests hold it equal to hdrh's record_value.
        """
        mask, base, magnitude, offset = self._index_params
        try:
            indexes = Counter(
                [
                    (s << magnitude) + (v >> s) + offset
                    for v in values
                    for s in ((v | mask).bit_length() - base,)
                ]
            )
        except TypeError:
            values = [int(v) for v in values]
            indexes = Counter(
                [
                    (s << magnitude) + (v >> s) + offset
                    for v in values
                    for s in ((v | mask).bit_length() - base,)
                ]
            )
        hdr = self._hdr
        counts = hdr.counts
        for index, count in indexes.items():
            counts[index] += count
        hdr.total_count += len(values)
        hdr.min_value = min(hdr.min_value, min(values))
        hdr.max_value = max(hdr.max_value, max(values))

    def _record_progression(self, first: int, last: int, step: int) -> None:
        """Record first, first + step, ..., last with one call per bucket they fall in."""
        hdr = self._hdr
        value = first
        while value <= last:
            top = min(int(hdr.get_highest_equivalent_value(value)), last)
            count = (top - value) // step + 1
            hdr.record_value(value, count)
            value += count * step

    def _nonzero_counts(self) -> list[tuple[int, int]]:
        hdr = self._hdr
        end = int(hdr.get_counts_array_index(hdr.max_value)) + 1
        counts: list[int] = hdr.counts[:end]
        return [(index, count) for index, count in enumerate(counts) if count]

    def _mean(self) -> float:
        """Mean using each bucket's midpoint, as HdrHistogram does, without its slow iterator."""
        hdr = self._hdr
        total = 0
        for index, count in self._nonzero_counts():
            low = int(hdr.get_value_from_index(index))
            width = int(hdr.get_highest_equivalent_value(low)) - low + 1
            total += count * (low + width // 2)
        return total / int(hdr.get_total_count())


def _restore(encoded: str, clamped: int, synthetic: int) -> LatencyHistogram:
    histogram = LatencyHistogram.decode(encoded)
    histogram._clamped = clamped
    histogram._synthetic = synthetic
    return histogram
