"""CircuitBreaker: the transition table, the full cycle, bypass and every counter."""

from __future__ import annotations

import math

import pytest

from pytest_cfn._core.breaker import (
    _TRANSITIONS,
    BYPASS_PRIORITY,
    BreakerEvent,
    BreakerState,
    CircuitBreaker,
)
from pytest_cfn._errors import InvalidOptionError

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def tripped(now: float = 0.0, **kwargs: float) -> CircuitBreaker:
    breaker = CircuitBreaker(**kwargs)  # type: ignore[arg-type]
    for _ in range(breaker.failure_threshold):
        breaker.record_failure(now)
    assert breaker.state(now) is OPEN
    return breaker


def test_state_values_are_strings() -> None:
    assert [s.value for s in BreakerState] == ["closed", "open", "half_open"]
    assert BreakerState("half_open") is HALF_OPEN
    assert BYPASS_PRIORITY == 8


def test_transition_table_is_exactly_the_four_rules() -> None:
    assert _TRANSITIONS == {
        (CLOSED, BreakerEvent.TRIP): OPEN,
        (OPEN, BreakerEvent.RESET_TIMEOUT): HALF_OPEN,
        (HALF_OPEN, BreakerEvent.TRIAL_FAILED): OPEN,
        (HALF_OPEN, BreakerEvent.RECOVERED): CLOSED,
    }


def test_new_breaker_is_closed_and_allows() -> None:
    breaker = CircuitBreaker()
    assert breaker.state(0.0) is CLOSED
    assert all(breaker.allow(0.0, p) for p in range(1, 10))
    assert breaker.stats() == {
        "state": "closed",
        "next_probe_in": 0.0,
        "consecutive_failures": 0,
        "consecutive_successes": 0,
        "opens": 0,
        "rejected": 0,
        "bypassed": 0,
        "failure_threshold": 5,
        "reset_timeout": 30.0,
        "success_threshold": 3,
    }


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_opens_after_threshold_consecutive_failures(threshold: int) -> None:
    breaker = CircuitBreaker(failure_threshold=threshold)
    for i in range(threshold - 1):
        breaker.record_failure(float(i))
        assert breaker.state(float(i)) is CLOSED
    breaker.record_failure(10.0)
    assert breaker.state(10.0) is OPEN
    assert breaker.opens == 1
    assert breaker.consecutive_failures == threshold


def test_a_success_resets_the_failure_count_while_closed() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    breaker.record_success(0.0)
    assert breaker.consecutive_failures == 0
    breaker.record_failure(0.0)
    breaker.record_failure(0.0)
    assert breaker.state(0.0) is CLOSED
    breaker.record_failure(0.0)
    assert breaker.state(0.0) is OPEN


def test_open_rejects_below_bypass_priority_and_counts() -> None:
    breaker = tripped(0.0)
    assert [breaker.allow(1.0, p) for p in range(1, 8)] == [False] * 7
    assert breaker.rejected == 7
    assert breaker.bypassed == 0


@pytest.mark.parametrize("priority", [8, 9])
def test_critical_priorities_bypass_an_open_breaker(priority: int) -> None:
    breaker = tripped(0.0)
    assert breaker.allow(1.0, priority) is True
    assert breaker.allow(2.0, priority) is True
    assert breaker.bypassed == 2
    assert breaker.rejected == 0
    assert breaker.state(2.0) is OPEN


def test_bypass_is_only_counted_when_the_breaker_would_have_refused() -> None:
    breaker = CircuitBreaker()
    assert breaker.allow(0.0, 9) is True
    assert breaker.bypassed == 0
    breaker = tripped(0.0, reset_timeout=10.0)
    assert breaker.allow(10.0, 9) is True  # half-open now: allowed anyway
    assert breaker.bypassed == 0


def test_open_becomes_half_open_exactly_at_reset_timeout() -> None:
    breaker = tripped(100.0, reset_timeout=30.0)
    assert breaker.allow(129.999) is False
    assert breaker.state(129.999) is OPEN
    assert breaker.allow(130.0) is True
    assert breaker.state(130.0) is HALF_OPEN
    assert breaker.rejected == 1


def test_state_query_alone_moves_open_to_half_open() -> None:
    breaker = tripped(0.0, reset_timeout=5.0)
    assert breaker.state(5.0) is HALF_OPEN
    assert breaker.stats()["state"] == "half_open"


def test_stats_with_now_reports_the_current_state() -> None:
    breaker = tripped(0.0, reset_timeout=5.0)
    assert breaker.stats()["state"] == "open"
    assert breaker.stats(now=6.0)["state"] == "half_open"


def test_half_open_closes_after_success_threshold_consecutive_successes() -> None:
    breaker = tripped(0.0, reset_timeout=10.0, success_threshold=3)
    assert breaker.allow(10.0)
    breaker.record_success(10.0)
    breaker.record_success(10.5)
    assert breaker.state(10.5) is HALF_OPEN
    assert breaker.consecutive_successes == 2
    assert breaker.consecutive_failures == 0
    breaker.record_success(11.0)
    assert breaker.state(11.0) is CLOSED
    assert breaker.consecutive_successes == 0
    assert breaker.consecutive_failures == 0
    assert breaker.opens == 1


def test_any_failure_while_half_open_reopens_and_restarts_the_timer() -> None:
    breaker = tripped(0.0, reset_timeout=10.0, success_threshold=3)
    assert breaker.state(10.0) is HALF_OPEN
    breaker.record_success(10.0)
    breaker.record_success(11.0)
    breaker.record_failure(12.0)
    assert breaker.state(12.0) is OPEN
    assert breaker.opens == 2
    assert breaker.consecutive_successes == 0
    assert breaker.allow(21.999) is False
    assert breaker.retry_after(21.0) == pytest.approx(1.0)
    assert breaker.allow(22.0) is True
    assert breaker.state(22.0) is HALF_OPEN


def test_full_cycle_closed_open_half_open_open_half_open_closed() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=5.0, success_threshold=2)
    seen = [breaker.state(0.0)]
    breaker.record_failure(0.0)
    breaker.record_failure(1.0)
    seen.append(breaker.state(1.0))
    assert not breaker.allow(2.0)
    assert breaker.allow(2.0, priority=9)
    seen.append(breaker.state(6.0))
    breaker.record_failure(6.0)
    seen.append(breaker.state(6.0))
    seen.append(breaker.state(11.0))
    breaker.record_success(11.0)
    breaker.record_success(11.1)
    seen.append(breaker.state(11.1))
    assert seen == [CLOSED, OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]
    assert breaker.stats() == {
        "state": "closed",
        "next_probe_in": 0.0,
        "consecutive_failures": 0,
        "consecutive_successes": 0,
        "opens": 2,
        "rejected": 1,
        "bypassed": 1,
        "failure_threshold": 2,
        "reset_timeout": 5.0,
        "success_threshold": 2,
    }


def test_outcomes_recorded_while_open_do_not_change_state_or_timer() -> None:
    breaker = tripped(0.0, reset_timeout=10.0, failure_threshold=2)
    breaker.record_success(1.0)
    assert breaker.state(1.0) is OPEN
    assert breaker.consecutive_successes == 0
    breaker.record_failure(2.0)
    assert breaker.state(2.0) is OPEN
    assert breaker.consecutive_failures == 3
    assert breaker.opens == 1
    assert breaker.state(10.0) is HALF_OPEN


def test_failure_recorded_after_timeout_counts_as_a_failed_trial() -> None:
    breaker = tripped(0.0, reset_timeout=10.0)
    breaker.record_failure(10.0)
    assert breaker.state(10.0) is OPEN
    assert breaker.opens == 2
    assert breaker.retry_after(10.0) == 10.0


def test_success_recorded_after_timeout_counts_towards_closing() -> None:
    breaker = tripped(0.0, reset_timeout=10.0, success_threshold=1)
    breaker.record_success(10.0)
    assert breaker.state(10.0) is CLOSED


def test_retry_after() -> None:
    breaker = CircuitBreaker(reset_timeout=30.0)
    assert breaker.retry_after(0.0) == 0.0
    breaker = tripped(100.0, reset_timeout=30.0)
    assert breaker.retry_after(110.0) == 20.0
    assert breaker.retry_after(130.0) == 0.0


def test_reset_forces_closed_and_keeps_totals() -> None:
    breaker = tripped(0.0)
    assert not breaker.allow(1.0)
    breaker.reset()
    assert breaker.state(1.0) is CLOSED
    assert breaker.allow(1.0)
    assert breaker.consecutive_failures == 0
    assert (breaker.opens, breaker.rejected) == (1, 1)


def test_a_pair_missing_from_the_table_is_a_bug_not_a_silent_no_op() -> None:
    breaker = CircuitBreaker()
    with pytest.raises(KeyError):
        breaker._fire(BreakerEvent.RECOVERED, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be an integer >= 1, got 0"),
        ({"failure_threshold": 2.5}, "failure_threshold must be an integer >= 1"),
        ({"failure_threshold": True}, "failure_threshold must be an integer >= 1"),
        ({"success_threshold": 0}, "success_threshold must be an integer >= 1, got 0"),
        ({"reset_timeout": 0}, "reset_timeout must be a finite number of seconds > 0"),
        ({"reset_timeout": -1.0}, "reset_timeout must be a finite number of seconds > 0"),
        ({"reset_timeout": math.inf}, "reset_timeout must be a finite number"),
        ({"reset_timeout": math.nan}, "reset_timeout must be a finite number"),
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_repr() -> None:
    assert repr(CircuitBreaker()) == (
        "CircuitBreaker(state=closed, consecutive_failures=0, opens=0)"
    )


def test_stats_say_when_an_open_breaker_lets_the_next_probe_through() -> None:
    breaker = tripped(100.0, reset_timeout=30.0, failure_threshold=2)
    assert breaker.stats(110.0)["next_probe_in"] == pytest.approx(20.0)
    assert breaker.stats(129.5)["next_probe_in"] == pytest.approx(0.5)
    assert breaker.stats(130.0)["state"] == "half_open"
    assert breaker.stats(130.0)["next_probe_in"] == 0.0
