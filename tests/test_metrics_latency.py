"""LatencyHistogram: percentiles, merge, encode/decode, coordinated omission, clamping."""

from __future__ import annotations

import itertools
import pickle
import random

import pytest
from hdrh.histogram import HdrHistogram

from pytest_cfn._errors import InvalidHistogramError, InvalidOptionError
from pytest_cfn.measure.metrics.latency import HIGHEST_NS, LatencyHistogram

US = 1_000
HDR_PRECISION = 0.001  # 3 significant digits: a value is reported within 0.1 %.


def reference(values: list[int], interval: int = 0) -> LatencyHistogram:
    """The same values recorded one by one through hdrh itself."""
    hdr = HdrHistogram(1, HIGHEST_NS, 3)
    for value in values:
        if interval:
            hdr.record_corrected_value(value, interval)
        else:
            hdr.record_value(value)
    return LatencyHistogram.decode(hdr.encode())


def test_percentiles_of_1_to_10000_us_are_within_hdr_precision() -> None:
    histogram = LatencyHistogram()
    for us in range(1, 10_001):
        histogram.record(us * US)

    summary = histogram.percentiles()

    assert histogram.count == 10_000
    assert summary["p50"] == pytest.approx(5_000 * US, rel=HDR_PRECISION)
    assert summary["p90"] == pytest.approx(9_000 * US, rel=HDR_PRECISION)
    assert summary["p99"] == pytest.approx(9_900 * US, rel=HDR_PRECISION)
    assert summary["p99_9"] == pytest.approx(9_990 * US, rel=HDR_PRECISION)
    assert summary["max"] == pytest.approx(10_000 * US, rel=HDR_PRECISION)
    assert summary["min"] == 1 * US
    assert summary["mean"] == pytest.approx(5_000.5 * US, rel=HDR_PRECISION)
    assert histogram.percentile(99) == summary["p99"]


def test_buffered_recording_equals_hdrh_record_value() -> None:
    rng = random.Random(7)
    values = [rng.randint(1, 2_000_000_000) for _ in range(30_000)] + [1, 2, 2047, 2048, 60 * 10**9]
    histogram = LatencyHistogram()
    for value in values[:20_000]:
        histogram.record(value)
    histogram.record_many(values[20_000:])

    expected = reference(values)

    assert histogram.count == expected.count == len(values)
    assert histogram.percentiles() == expected.percentiles()
    assert histogram.cdf(10_000) == expected.cdf(10_000)
    assert histogram.encode() == expected.encode()


def test_merge_equals_recording_both_sets_in_one() -> None:
    rng = random.Random(11)
    first = [rng.randint(10 * US, 900 * US) for _ in range(5_000)]
    second = [rng.randint(500 * US, 90_000 * US) for _ in range(3_000)]
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    a.record_many(first)
    b.record_many(second)
    both.record_many(first + second)

    a.merge(b)

    assert a.count == 8_000
    assert a.percentiles() == both.percentiles()
    assert b.count == 3_000


@pytest.mark.parametrize("empty_side", ["self", "other", "both"])
def test_merge_with_an_empty_histogram_keeps_the_true_minimum(empty_side: str) -> None:
    target, other = LatencyHistogram(), LatencyHistogram()
    if empty_side not in ("self", "both"):
        target.record(700 * US)
    if empty_side not in ("other", "both"):
        other.record(300 * US)

    target.merge(other)
    target.record(500 * US)

    expected_min = {"self": 300 * US, "other": 500 * US, "both": 500 * US}[empty_side]
    assert target.percentiles()["min"] == pytest.approx(expected_min, rel=HDR_PRECISION)


def test_encode_decode_round_trip_preserves_count_and_percentiles() -> None:
    rng = random.Random(3)
    histogram = LatencyHistogram()
    histogram.record_many([int(rng.expovariate(1 / 200_000)) + 1 for _ in range(50_000)])

    encoded = histogram.encode()
    decoded = LatencyHistogram.decode(encoded)

    assert isinstance(encoded, str)
    assert encoded.isascii()
    assert decoded.count == histogram.count
    assert decoded.percentiles() == histogram.percentiles()
    decoded.merge(histogram)
    assert decoded.count == 2 * histogram.count


def test_decoded_empty_histogram_is_empty_and_records() -> None:
    decoded = LatencyHistogram.decode(LatencyHistogram().encode())

    assert decoded.count == 0
    assert decoded.percentiles()["max"] == 0
    decoded.record(42)
    assert decoded.percentiles()["min"] == 42


def test_pickle_round_trip_keeps_values_and_counters() -> None:
    histogram = LatencyHistogram()
    histogram.record(0)
    histogram.record_corrected(10 * US, 1 * US)

    copy = pickle.loads(pickle.dumps(histogram))

    assert copy.percentiles() == histogram.percentiles()
    assert (copy.count, copy.clamped, copy.synthetic) == (11, 1, 9)


def test_decode_rejects_garbage_and_foreign_layouts() -> None:
    with pytest.raises(InvalidHistogramError, match="not an encoded HdrHistogram"):
        LatencyHistogram.decode("not base64 at all!")
    foreign = HdrHistogram(1, 3_600_000_000, 2)
    foreign.record_value(5)
    with pytest.raises(InvalidHistogramError, match=r"expected 1\.\.60000000000"):
        LatencyHistogram.decode(foreign.encode())


def test_coordinated_omission_adds_one_synthetic_value_per_missed_interval() -> None:
    histogram = LatencyHistogram()

    histogram.record_corrected(10 * US, 1 * US)

    assert histogram.count == 10
    assert histogram.synthetic == 9
    assert histogram.percentiles()["min"] == 1 * US
    assert histogram.percentiles()["p50"] == pytest.approx(5 * US, rel=HDR_PRECISION)
    assert histogram.percentiles() == reference([10 * US], interval=1 * US).percentiles()


def test_coordinated_omission_of_a_long_stall_matches_hdrh() -> None:
    stalls = [3 * 10**9 + 17, 250_000, 40_000, 999_999]
    histogram = LatencyHistogram()
    for value in stalls:
        histogram.record_corrected(value, 100 * US)

    expected = reference(stalls, interval=100 * US)

    assert histogram.count == expected.count == 30_000 + 3 + 1 + 10 + 1
    assert histogram.synthetic == histogram.count - len(stalls)
    assert histogram.percentiles() == expected.percentiles()


@pytest.mark.parametrize("interval", [0, -5, 10 * US, 20 * US])
def test_no_correction_when_within_interval_or_without_one(interval: int) -> None:
    histogram = LatencyHistogram()

    histogram.record_corrected(10 * US, interval)

    assert (histogram.count, histogram.synthetic) == (1, 0)


def test_out_of_range_values_are_clamped_and_counted() -> None:
    histogram = LatencyHistogram()

    histogram.record(0)
    histogram.record(-5)
    histogram.record(HIGHEST_NS + 1)
    histogram.record_many([3 * US, 10**15])
    histogram.record(HIGHEST_NS)

    assert histogram.count == 6
    assert histogram.clamped == 4
    summary = histogram.percentiles()
    assert summary["min"] == 1
    assert summary["max"] == pytest.approx(HIGHEST_NS, rel=HDR_PRECISION)


def test_empty_histogram_reports_zeros() -> None:
    histogram = LatencyHistogram()

    assert histogram.percentile(99) == 0
    assert histogram.percentiles() == {
        "p50": 0,
        "p90": 0,
        "p99": 0,
        "p99_9": 0,
        "max": 0,
        "min": 0,
        "mean": 0.0,
    }
    assert histogram.cdf() == []


@pytest.mark.parametrize("p", [-0.1, 100.5])
def test_percentile_outside_0_to_100_is_refused(p: float) -> None:
    with pytest.raises(InvalidOptionError, match="use 0 to 100"):
        LatencyHistogram().percentile(p)


def test_to_dict_reports_microseconds_and_the_encoded_histogram() -> None:
    histogram = LatencyHistogram()
    histogram.record_many([100 * US, 200 * US, 300 * US])
    histogram.record(-1)

    data = histogram.to_dict()

    assert data["count"] == 4
    assert data["clamped"] == 1
    assert data["p50_us"] == histogram.percentile(50) / 1000
    assert data["p99_9_us"] == pytest.approx(300, rel=HDR_PRECISION)
    assert data["min_us"] == 0.001
    assert set(data) >= {"p90_us", "p99_us", "max_us", "mean_us", "synthetic"}
    assert LatencyHistogram.decode(data["encoded"]).count == 4


def test_cdf_is_monotonic_ends_at_one_and_respects_points() -> None:
    rng = random.Random(5)
    histogram = LatencyHistogram()
    histogram.record_many([rng.randint(1 * US, 50_000 * US) for _ in range(20_000)])

    curve = histogram.cdf(points=50)

    assert 2 <= len(curve) <= 50
    assert curve[-1][1] == 1.0
    assert curve[-1][0] == histogram.percentiles()["max"] / 1000
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(curve))
    with pytest.raises(InvalidOptionError, match="points >= 2"):
        histogram.cdf(points=1)


def test_reset_forgets_values_and_counters() -> None:
    histogram = LatencyHistogram()
    histogram.record(-1)
    histogram.record_corrected(5 * US, 1 * US)

    histogram.reset()

    assert (histogram.count, histogram.clamped, histogram.synthetic) == (0, 0, 0)
    assert histogram.percentile(50) == 0
