"""Priority validation, TokenBucket refill, and PriorityThrottle's shared low-priority bucket."""

from __future__ import annotations

import math

import pytest

from pytest_cfn._core.throttle import (
    THROTTLED_MAX_PRIORITY,
    PriorityThrottle,
    TokenBucket,
    validate_priority,
)
from pytest_cfn._errors import InvalidOptionError


@pytest.mark.parametrize("priority", range(1, 10))
def test_valid_priorities_are_returned(priority: int) -> None:
    assert validate_priority(priority) == priority


@pytest.mark.parametrize("priority", [0, 10, 12, -1])
def test_out_of_range_priority_is_refused_with_the_allowed_range(priority: int) -> None:
    expected = (
        f"priority {priority} is out of range; priorities are integers 1 (low) to 9 (critical)"
    )
    with pytest.raises(InvalidOptionError) as info:
        validate_priority(priority)
    assert str(info.value) == expected


def test_priority_12_message_is_exact() -> None:
    with pytest.raises(InvalidOptionError) as info:
        validate_priority(12)
    assert str(info.value) == (
        "priority 12 is out of range; priorities are integers 1 (low) to 9 (critical)"
    )


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(True, "bool"), (False, "bool"), (5.0, "float"), ("5", "str"), (None, "NoneType")],
)
def test_non_int_priority_is_refused(value: object, type_name: str) -> None:
    with pytest.raises(InvalidOptionError, match=f"is a {type_name}; priorities are integers 1"):
        validate_priority(value)


def test_throttled_max_priority_is_five() -> None:
    assert THROTTLED_MAX_PRIORITY == 5


def test_bucket_starts_full_with_default_burst() -> None:
    bucket = TokenBucket(rate=4.0)
    assert bucket.burst == 4.0
    assert [bucket.take(0.0) for _ in range(5)] == [True] * 4 + [False]


def test_default_burst_is_at_least_one() -> None:
    bucket = TokenBucket(rate=0.5)
    assert bucket.burst == 1.0
    assert bucket.take(0.0) is True
    assert bucket.take(0.0) is False


def test_bucket_refills_over_time() -> None:
    bucket = TokenBucket(rate=2.0, burst=2.0)
    assert bucket.take(10.0) and bucket.take(10.0)
    assert bucket.take(10.0) is False
    assert bucket.take(10.25) is False  # half a token
    assert bucket.take(10.5) is True  # one token after 0.5 s at 2/s
    assert bucket.take(10.5) is False
    assert bucket.tokens(11.0) == 1.0


def test_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0)
    assert bucket.take(0.0, 3.0)
    assert bucket.tokens(1000.0) == 3.0
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_time_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0)
    assert bucket.take(10.0)
    assert bucket.take(5.0) is False
    assert bucket.tokens(10.5) == 0.5


def test_take_n_tokens() -> None:
    bucket = TokenBucket(rate=1.0, burst=5.0)
    assert bucket.take(0.0, 3.0)
    assert bucket.take(0.0, 3.0) is False
    assert bucket.tokens(0.0) == 2.0  # a refused take takes nothing


def test_taking_more_than_burst_can_never_succeed_and_says_so() -> None:
    bucket = TokenBucket(rate=1.0, burst=2.0)
    with pytest.raises(InvalidOptionError, match=r"at most 2\.0"):
        bucket.take(0.0, 3.0)
    with pytest.raises(InvalidOptionError, match="never be available"):
        bucket.time_until(0.0, 3.0)


def test_time_until() -> None:
    bucket = TokenBucket(rate=4.0, burst=1.0)
    assert bucket.time_until(0.0) == 0.0
    assert bucket.take(0.0)
    assert bucket.time_until(0.0) == 0.25
    assert bucket.time_until(0.125) == 0.125


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, "rate must be a finite number > 0, got 0"),
        ({"rate": -1.0}, "rate must be a finite number > 0"),
        ({"rate": math.inf}, "rate must be a finite number > 0"),
        ({"rate": math.nan}, "rate must be a finite number > 0"),
        ({"rate": "10"}, "rate must be a finite number > 0"),
        ({"rate": True}, "rate must be a finite number > 0"),
        ({"rate": 1.0, "burst": 0}, "burst must be a finite number > 0"),
    ],
)
def test_invalid_bucket_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        TokenBucket(**kwargs)  # type: ignore[arg-type]


def test_throttle_is_off_by_default() -> None:
    throttle = PriorityThrottle()
    assert throttle.enabled is False
    assert all(throttle.allow(p, 0.0) for p in range(1, 10) for _ in range(1000))
    assert throttle.stats() == {"allowed": 9000, "throttled": 0, "rate": None, "burst": None}
    assert throttle.retry_after(0.0) == 0.0


def test_priorities_one_to_five_share_one_bucket() -> None:
    throttle = PriorityThrottle(rate=1.0, burst=3.0)
    assert throttle.allow(1, 0.0)
    assert throttle.allow(3, 0.0)
    assert throttle.allow(5, 0.0)
    assert [throttle.allow(p, 0.0) for p in range(1, 6)] == [False] * 5
    assert throttle.stats() == {"allowed": 3, "throttled": 5, "rate": 1.0, "burst": 3.0}


@pytest.mark.parametrize("priority", [6, 7, 8, 9])
def test_priorities_six_to_nine_are_never_throttled(priority: int) -> None:
    throttle = PriorityThrottle(rate=1.0, burst=1.0)
    assert throttle.allow(5, 0.0)
    assert throttle.allow(5, 0.0) is False
    assert all(throttle.allow(priority, 0.0) for _ in range(100))
    assert throttle.allowed == 101
    assert throttle.throttled == 1


def test_high_priorities_do_not_take_tokens() -> None:
    throttle = PriorityThrottle(rate=1.0, burst=2.0)
    for _ in range(10):
        throttle.allow(9, 0.0)
    assert throttle.allow(1, 0.0) and throttle.allow(1, 0.0)
    assert throttle.allow(1, 0.0) is False


def test_throttle_refills_and_reports_retry_after() -> None:
    throttle = PriorityThrottle(rate=10.0)
    assert throttle.burst == 10.0
    assert sum(throttle.allow(5, 0.0) for _ in range(20)) == 10
    assert throttle.retry_after(0.0) == pytest.approx(0.1)
    assert sum(throttle.allow(5, 0.5) for _ in range(20)) == 5
    assert (throttle.allowed, throttle.throttled) == (15, 25)


def test_throttle_burst_without_rate_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="burst was given without a rate"):
        PriorityThrottle(burst=5.0)


def test_throttle_burst_below_one_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="must be >= 1"):
        PriorityThrottle(rate=1.0, burst=0.5)


def test_reprs() -> None:
    assert repr(TokenBucket(2.0)) == "TokenBucket(rate=2.0, burst=2.0)"
    assert repr(PriorityThrottle()) == "PriorityThrottle(rate=None, burst=None)"
