"""SequenceTracker: in-order, gaps, late arrivals, duplicates, late start, window bound."""

from __future__ import annotations

import random

import pytest

from pytest_cfn._core.sequence import SequenceTracker, Verdict
from pytest_cfn._errors import InvalidOptionError

NEW, GAP, DUPLICATE, REORDERED = Verdict.NEW, Verdict.GAP, Verdict.DUPLICATE, Verdict.REORDERED
ANOMALY = Verdict.ANOMALY


def observe_all(tracker: SequenceTracker, seqs: list[int], publisher: str = "p") -> list[Verdict]:
    return [tracker.observe(publisher, s) for s in seqs]


def totals(tracker: SequenceTracker) -> tuple[int, int, int, int, int]:
    s = tracker.stats()
    return s["received"], s["lost"], s["duplicates"], s["reordered"], s["late_start_skipped"]


def test_in_order_stream_is_all_new() -> None:
    tracker = SequenceTracker()
    assert observe_all(tracker, list(range(1, 101))) == [NEW] * 100
    assert tracker.stats() == {
        "received": 100,
        "lost": 0,
        "duplicates": 0,
        "reordered": 0,
        "late_start_skipped": 0,
        "anomalies": 0,
        "resyncs": 0,
        "publishers": 1,
        "missing_remembered": 0,
    }
    assert tracker.expected("p") == 101


def test_gap_counts_the_skipped_numbers_as_lost() -> None:
    tracker = SequenceTracker()
    assert observe_all(tracker, [1, 2, 6, 7]) == [NEW, NEW, GAP, NEW]
    assert totals(tracker) == (4, 3, 0, 0, 0)
    assert tracker.lost_ranges("p") == [(3, 5)]
    assert tracker.stats()["missing_remembered"] == 3


def test_gap_then_late_arrival_then_duplicate() -> None:
    tracker = SequenceTracker()
    assert observe_all(tracker, [1, 2, 5]) == [NEW, NEW, GAP]
    assert totals(tracker) == (3, 2, 0, 0, 0)
    assert tracker.observe("p", 3) is REORDERED
    assert totals(tracker) == (4, 1, 0, 1, 0)
    assert tracker.lost_ranges("p") == [(4, 4)]
    assert tracker.observe("p", 3) is DUPLICATE
    assert totals(tracker) == (5, 1, 1, 1, 0)
    assert tracker.observe("p", 4) is REORDERED
    assert totals(tracker) == (6, 0, 1, 2, 0)
    assert tracker.lost_ranges("p") == []
    assert tracker.stats()["missing_remembered"] == 0
    assert tracker.observe("p", 6) is NEW


@pytest.mark.parametrize("seq", [1, 2, 3])
def test_repeat_of_a_seen_seq_is_a_duplicate(seq: int) -> None:
    tracker = SequenceTracker()
    observe_all(tracker, [1, 2, 3])
    assert tracker.observe("p", seq) is DUPLICATE
    assert tracker.duplicates == 1
    assert tracker.observe("p", 4) is NEW


def test_late_arrival_in_the_middle_splits_the_missing_range() -> None:
    tracker = SequenceTracker()
    observe_all(tracker, [1, 10])
    assert tracker.lost_ranges("p") == [(2, 9)]
    assert tracker.observe("p", 5) is REORDERED
    assert tracker.lost_ranges("p") == [(2, 4), (6, 9)]
    assert tracker.observe("p", 2) is REORDERED
    assert tracker.observe("p", 9) is REORDERED
    assert tracker.lost_ranges("p") == [(3, 4), (6, 8)]
    assert tracker.lost == 5
    assert tracker.reordered == 3


def test_several_gaps_are_kept_as_separate_ranges() -> None:
    tracker = SequenceTracker()
    assert observe_all(tracker, [1, 3, 4, 8, 9, 20]) == [NEW, GAP, NEW, GAP, NEW, GAP]
    assert tracker.lost_ranges("p") == [(2, 2), (5, 7), (10, 19)]
    assert tracker.lost == 1 + 3 + 10
    assert tracker.observe("p", 6) is REORDERED
    assert tracker.lost_ranges("p") == [(2, 2), (5, 5), (7, 7), (10, 19)]


def test_late_start_is_not_counted_as_loss() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("p", 500) is NEW
    assert totals(tracker) == (1, 0, 0, 0, 499)
    assert tracker.lost_ranges("p") == []
    assert tracker.observe("p", 501) is NEW
    assert tracker.expected("p") == 502


def test_message_from_just_before_a_late_start_is_reordered_not_duplicate() -> None:
    tracker = SequenceTracker()
    observe_all(tracker, [7, 8])
    assert tracker.observe("p", 6) is REORDERED
    assert totals(tracker) == (3, 0, 0, 1, 5)
    assert tracker.observe("p", 6) is DUPLICATE
    assert totals(tracker) == (4, 0, 1, 1, 5)


def test_first_message_at_seq_one_is_not_a_late_start() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("p", 1) is NEW
    assert tracker.late_start_skipped == 0
    assert tracker.stats()["missing_remembered"] == 0


def test_publishers_are_tracked_independently() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("a", 1) is NEW
    assert tracker.observe("b", 1) is NEW
    assert tracker.observe("a", 2) is NEW
    assert tracker.observe("b", 3) is GAP
    assert tracker.observe("a", 2) is DUPLICATE
    assert tracker.lost_ranges("a") == []
    assert tracker.lost_ranges("b") == [(2, 2)]
    assert tracker.stats()["publishers"] == 2
    assert len(tracker) == 2


def test_unknown_publisher_has_no_state() -> None:
    tracker = SequenceTracker()
    assert tracker.expected("nobody") is None
    assert tracker.lost_ranges("nobody") == []
    assert tracker.reset_publisher("nobody") is False


def test_reset_publisher_forgets_state_but_keeps_totals() -> None:
    tracker = SequenceTracker()
    observe_all(tracker, [1, 2, 5])
    assert tracker.reset_publisher("p") is True
    assert tracker.expected("p") is None
    assert tracker.lost_ranges("p") == []
    assert tracker.observe("p", 1) is NEW  # a restarted stream starts again
    assert totals(tracker) == (4, 2, 0, 0, 0)
    assert tracker.stats()["publishers"] == 1


def test_window_bounds_the_remembered_missing_numbers_of_one_gap() -> None:
    tracker = SequenceTracker(window=4)
    observe_all(tracker, [1, 12])
    assert tracker.lost == 10
    assert tracker.lost_ranges("p") == [(8, 11)]
    assert tracker.stats()["missing_remembered"] == 4
    assert tracker.observe("p", 3) is DUPLICATE  # forgotten: cannot be told from a repeat
    assert tracker.observe("p", 9) is REORDERED
    assert (tracker.lost, tracker.duplicates, tracker.reordered) == (9, 1, 1)


def test_window_forgets_the_oldest_missing_across_gaps() -> None:
    tracker = SequenceTracker(window=5)
    observe_all(tracker, [1, 4, 5, 9, 10, 13])  # missing 2-3, 6-8, 11-12
    assert tracker.lost == 7
    assert tracker.lost_ranges("p") == [(6, 8), (11, 12)]
    assert tracker.stats()["missing_remembered"] == 5
    tracker.observe("p", 15)  # missing 14: the oldest remembered number, 6, goes
    assert tracker.lost_ranges("p") == [(7, 8), (11, 12), (14, 14)]
    assert tracker.stats()["missing_remembered"] == 5
    assert tracker.observe("p", 2) is DUPLICATE
    assert tracker.observe("p", 6) is DUPLICATE
    assert tracker.observe("p", 7) is REORDERED
    assert (tracker.lost, tracker.duplicates, tracker.reordered) == (7, 2, 1)


def test_window_zero_remembers_nothing() -> None:
    tracker = SequenceTracker(window=0)
    observe_all(tracker, [1, 5])
    assert tracker.lost == 3
    assert tracker.lost_ranges("p") == []
    assert tracker.observe("p", 3) is DUPLICATE
    assert tracker.stats()["missing_remembered"] == 0


def test_late_start_memory_is_bounded_by_the_window() -> None:
    tracker = SequenceTracker(window=8)
    tracker.observe("p", 1_000_000)
    assert tracker.late_start_skipped == 999_999
    assert tracker.stats()["missing_remembered"] == 8
    assert tracker.observe("p", 999_995) is REORDERED
    assert tracker.observe("p", 999_990) is DUPLICATE


def test_late_start_memory_gives_way_to_real_gaps() -> None:
    tracker = SequenceTracker(window=4)
    tracker.observe("p", 10)  # remembers 6-9 as before-start
    tracker.observe("p", 14)  # gap 11-13 pushes out 6-8
    assert tracker.lost_ranges("p") == [(11, 13)]
    assert tracker.stats()["missing_remembered"] == 4
    assert tracker.observe("p", 9) is REORDERED
    assert tracker.late_start_skipped == 8
    assert tracker.observe("p", 8) is DUPLICATE
    assert tracker.lost == 3


def test_huge_gap_once_confirmed_is_cheap_and_bounded() -> None:
    tracker = SequenceTracker(window=1024)
    tracker.observe("p", 1)
    assert observe_all(tracker, [10_000_001, 10_000_002, 10_000_003]) == [ANOMALY] * 3
    assert tracker.resyncs == 1
    assert tracker.lost == 9_999_999
    assert tracker.lost_ranges("p") == [(10_000_001 - 1024, 10_000_000)]
    assert tracker.observe("p", 10_000_004) is NEW


def test_shuffled_stream_within_window_loses_nothing_and_reorders_some() -> None:
    rng = random.Random(1234)
    seqs = list(range(1, 2001))
    # swap neighbours here and there: a bounded reordering
    for i in range(0, 1998, 7):
        if rng.random() < 0.5:
            seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]
    tracker = SequenceTracker()
    verdicts = observe_all(tracker, seqs)
    assert tracker.lost == 0
    assert tracker.duplicates == 0
    assert tracker.reordered == verdicts.count(REORDERED) == verdicts.count(GAP)
    assert tracker.reordered > 0
    assert tracker.received == 2000
    assert tracker.stats()["missing_remembered"] == 0


def test_stream_with_loss_and_duplicates_adds_up() -> None:
    rng = random.Random(99)
    sent = list(range(1, 5001))
    dropped = set(rng.sample(sent[1:], 200))
    delivered = [s for s in sent if s not in dropped]
    repeats = rng.sample(delivered, 50)
    stream = delivered + repeats
    tracker = SequenceTracker()
    verdicts = observe_all(tracker, stream)
    assert tracker.received == 4850
    assert verdicts.count(DUPLICATE) == tracker.duplicates == 50
    # loss after the last arrival cannot be seen from the stream alone
    assert tracker.lost == sum(1 for s in dropped if s < max(delivered))
    assert tracker.received - tracker.duplicates == len(delivered) == 4800
    assert tracker.reordered == 0


def test_verdicts_are_ints_that_name_themselves() -> None:
    assert [int(v) for v in (NEW, GAP, DUPLICATE, REORDERED)] == [0, 1, 2, 3]
    assert Verdict.DUPLICATE.name == "DUPLICATE"


@pytest.mark.parametrize("window", [-1, 1.5, True, "1024"])
def test_invalid_window_is_refused(window: object) -> None:
    with pytest.raises(InvalidOptionError, match="window must be an integer >= 0"):
        SequenceTracker(window=window)  # type: ignore[arg-type]


def test_repr() -> None:
    tracker = SequenceTracker()
    observe_all(tracker, [1, 3, 3])
    assert repr(tracker) == (
        "SequenceTracker(publishers=1, received=3, lost=1, duplicates=1, reordered=0)"
    )


@pytest.mark.parametrize("seed", range(10))
def test_matches_a_set_based_model_when_the_window_is_large_enough(seed: int) -> None:
    """Random loss, repeats and local reordering, from a random start, against a plain model."""
    rng = random.Random(seed)
    start = rng.randint(1, 50)
    stream = []
    for seq in range(start, start + 3000):
        roll = rng.random()
        if roll < 0.05:
            continue  # lost
        stream.append(seq)
        if roll > 0.97:
            stream.append(seq)  # repeated
    for i in range(0, len(stream) - 3, 5):
        if rng.random() < 0.3:
            stream[i], stream[i + 2] = stream[i + 2], stream[i]
    if start > 1 and rng.random() < 0.5:
        stream.insert(10, start - 1)  # one from before the start, delivered late

    tracker = SequenceTracker(window=10_000)
    seen: set[int] = set()
    first = stream[0]
    highest = 0
    expected_verdicts = []
    for seq in stream:
        if seq in seen:
            expected_verdicts.append(DUPLICATE)
        elif not seen or seq == highest + 1:
            expected_verdicts.append(NEW)
        elif seq > highest:
            expected_verdicts.append(GAP)
        else:
            expected_verdicts.append(REORDERED)
        seen.add(seq)
        highest = max(highest, seq)

    assert observe_all(tracker, stream) == expected_verdicts
    unseen_after_first = {s for s in range(first, highest) if s not in seen}
    unseen_before_first = {s for s in range(1, first) if s not in seen}
    assert tracker.lost == len(unseen_after_first)
    assert tracker.late_start_skipped == len(unseen_before_first)
    assert tracker.duplicates == len(stream) - len(seen)
    assert tracker.received == len(stream)
    outstanding = {s for first_, last in tracker.lost_ranges("p") for s in range(first_, last + 1)}
    assert outstanding == unseen_after_first


def test_one_forged_far_seq_does_not_silence_the_publisher() -> None:
    tracker = SequenceTracker()
    observe_all(tracker, list(range(1, 11)))
    assert tracker.observe("p", 10**12) is ANOMALY
    assert observe_all(tracker, list(range(11, 61))) == [NEW] * 50
    assert (tracker.lost, tracker.duplicates, tracker.anomalies) == (0, 0, 1)
    assert tracker.expected("p") == 61
    assert tracker.observe("p", 10**12) is DUPLICATE  # the same forged copy, again


def test_forged_first_seq_is_undone_when_the_genuine_stream_shows_up() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("p", 10**12) is NEW  # nothing to compare with yet
    verdicts = observe_all(tracker, list(range(1, 51)))
    assert DUPLICATE not in verdicts
    assert verdicts[:3] == [ANOMALY] * 3
    assert verdicts[3:] == [NEW] * 47
    assert (tracker.resyncs, tracker.lost, tracker.late_start_skipped) == (1, 0, 0)


def test_three_forged_in_a_row_move_it_and_the_genuine_stream_moves_it_back() -> None:
    tracker = SequenceTracker()
    observe_all(tracker, list(range(1, 11)))
    observe_all(tracker, [10**12, 10**12 + 1, 10**12 + 2])
    assert tracker.resyncs == 1
    verdicts = observe_all(tracker, list(range(11, 61)))
    assert DUPLICATE not in verdicts
    assert tracker.resyncs == 2
    assert tracker.lost == 0
    assert tracker.expected("p") == 61
    assert tracker.duplicates == 0


def test_plausible_forged_jump_leaves_genuine_seqs_deliverable() -> None:
    tracker = SequenceTracker()
    observe_all(tracker, [1, 2, 3])
    assert tracker.observe("p", 3 + 1024) is GAP  # within max_jump: taken as a gap
    verdicts = observe_all(tracker, list(range(4, 104)))
    assert verdicts == [REORDERED] * 100
    assert tracker.duplicates == 0


def test_genuine_long_outage_resyncs_after_confirm_arrivals() -> None:
    tracker = SequenceTracker(max_jump=100, confirm=2)
    observe_all(tracker, [1, 2])
    assert observe_all(tracker, [5000, 5001, 5002]) == [ANOMALY, ANOMALY, NEW]
    assert (tracker.lost, tracker.resyncs, tracker.anomalies) == (4997, 1, 2)
    assert tracker.observe("p", 5001) is DUPLICATE


def test_retried_duplicates_far_below_the_head_are_still_duplicates() -> None:
    tracker = SequenceTracker()
    observe_all(tracker, list(range(1, 5001)))
    assert observe_all(tracker, list(range(1, 5001))) == [DUPLICATE] * 5000
    assert tracker.anomalies == 0


@pytest.mark.parametrize(("name", "value"), [("max_jump", 0), ("confirm", 0), ("confirm", 1.0)])
def test_invalid_plausibility_settings_are_refused(name: str, value: object) -> None:
    with pytest.raises(InvalidOptionError, match=f"sequence {name} must be an integer"):
        SequenceTracker(**{name: value})  # type: ignore[arg-type]
