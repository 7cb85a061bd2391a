"""Backoff strategies and RetryPolicy."""

from __future__ import annotations

import math
import random

import pytest

from pytest_cfn._core.backoff import (
    Backoff,
    ConstantBackoff,
    ExponentialBackoff,
    ExponentialWithJitterBackoff,
    NoBackoff,
    RetryPolicy,
)
from pytest_cfn._errors import InvalidOptionError


@pytest.mark.parametrize("failures", [0, 1, 5, 1000])
def test_no_backoff_is_zero(failures: int) -> None:
    assert NoBackoff().compute(failures) == 0.0


@pytest.mark.parametrize("failures", [0, 1, 5, 1000])
def test_constant_backoff(failures: int) -> None:
    assert ConstantBackoff(0.25).compute(failures) == 0.25


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.05), (1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 2.0), (50, 2.0)],
)
def test_exponential_doubles_up_to_the_cap(failures: int, expected: float) -> None:
    assert ExponentialBackoff().compute(failures) == pytest.approx(expected)


@pytest.mark.parametrize("failures", [64, 1024, 10**6])
def test_exponential_does_not_overflow_for_huge_failure_counts(failures: int) -> None:
    assert ExponentialBackoff(base=1e-9, cap=5.0).compute(failures) == 5.0
    assert ExponentialWithJitterBackoff(base=1e-9, cap=5.0).compute(failures) <= 5.0


def test_exponential_with_zero_base_is_zero() -> None:
    assert ExponentialBackoff(base=0.0, cap=1.0).compute(10) == 0.0


def test_cap_equal_to_base_is_constant() -> None:
    backoff = ExponentialBackoff(base=0.5, cap=0.5)
    assert [backoff.compute(f) for f in range(5)] == [0.5] * 5


@pytest.mark.parametrize("failures", [0, 1, 2, 3, 8])
def test_full_jitter_stays_within_zero_and_the_ceiling(failures: int) -> None:
    backoff = ExponentialWithJitterBackoff(rng=random.Random(7))
    ceiling = min(2.0, 0.05 * 2**failures)
    samples = [backoff.compute(failures) for _ in range(2000)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # uniform over [0, ceiling]: the mean is near half the ceiling, and both halves are used
    assert sum(samples) / len(samples) == pytest.approx(ceiling / 2, rel=0.1)
    assert min(samples) < ceiling * 0.1
    assert max(samples) > ceiling * 0.9


def test_full_jitter_is_reproducible_with_a_seeded_rng() -> None:
    a = ExponentialWithJitterBackoff(rng=random.Random(42))
    b = ExponentialWithJitterBackoff(rng=random.Random(42))
    assert [a.compute(f) for f in range(10)] == [b.compute(f) for f in range(10)]


def test_jitter_uses_its_own_rng_by_default() -> None:
    a = ExponentialWithJitterBackoff()
    b = ExponentialWithJitterBackoff()
    assert [a.compute(5) for _ in range(5)] != [b.compute(5) for _ in range(5)]


@pytest.mark.parametrize(
    "backoff",
    [NoBackoff(), ConstantBackoff(1.0), ExponentialBackoff(), ExponentialWithJitterBackoff()],
)
def test_negative_failures_are_refused(backoff: Backoff) -> None:
    with pytest.raises(InvalidOptionError, match="failures is -1"):
        backoff.compute(-1)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ConstantBackoff(-1.0), "delay must be a finite number of seconds >= 0"),
        (lambda: ConstantBackoff(math.inf), "delay must be a finite number"),
        (lambda: ConstantBackoff("1"), "delay must be a finite number"),  # type: ignore[arg-type]
        (lambda: ExponentialBackoff(base=-0.1), "base must be a finite number"),
        (lambda: ExponentialBackoff(cap=math.nan), "cap must be a finite number"),
        (lambda: ExponentialBackoff(base=1.0, cap=0.5), "cap \\(0.5\\) is below its base"),
        (
            lambda: ExponentialWithJitterBackoff(base=3.0, cap=2.0),
            "ExponentialWithJitterBackoff cap",
        ),
    ],
)
def test_invalid_backoff_options_are_refused(factory: object, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        factory()  # type: ignore[operator]


def test_reset_is_a_harmless_no_op() -> None:
    backoff = ExponentialBackoff()
    backoff.reset()
    assert backoff.compute(1) == pytest.approx(0.1)


def test_retry_policy_defaults_match_the_adr() -> None:
    policy = RetryPolicy()
    assert policy.retries == 3
    assert policy.attempts == 4
    assert isinstance(policy.backoff, ExponentialWithJitterBackoff)
    delays = list(policy.delays())
    assert len(delays) == 3
    # ADR-002 waits 100, 200, 400 ms; full jitter spreads each below that ceiling
    assert all(0.0 <= d <= ceiling for d, ceiling in zip(delays, (0.1, 0.2, 0.4), strict=True))


def test_retry_policy_delays_follow_the_backoff_from_one_failure() -> None:
    policy = RetryPolicy(retries=5, backoff=ExponentialBackoff(base=0.1, cap=1.0))
    assert list(policy.delays()) == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])


def test_retry_policy_delays_can_be_iterated_again() -> None:
    policy = RetryPolicy(retries=2, backoff=ConstantBackoff(0.5))
    assert list(policy.delays()) == [0.5, 0.5]
    assert list(policy.delays()) == [0.5, 0.5]


def test_zero_retries_means_no_delays() -> None:
    policy = RetryPolicy(retries=0, backoff=NoBackoff())
    assert list(policy.delays()) == []
    assert policy.attempts == 1


def test_retry_policy_calls_reset_before_each_run() -> None:
    class Counting(Backoff):
        def __init__(self) -> None:
            self.resets = 0
            self.calls: list[int] = []

        def reset(self) -> None:
            self.resets += 1

        def compute(self, failures: int) -> float:
            self.calls.append(failures)
            return 0.0

    backoff = Counting()
    policy = RetryPolicy(retries=3, backoff=backoff)
    list(policy.delays())
    list(policy.delays())
    assert backoff.resets == 2
    assert backoff.calls == [1, 2, 3, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retries": -1}, "retries must be an integer >= 0"),
        ({"retries": 2.0}, "retries must be an integer >= 0"),
        ({"retries": True}, "retries must be an integer >= 0"),
        ({"backoff": 0.1}, "backoff must be a Backoff"),
    ],
)
def test_invalid_retry_policy_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_backoff_base_class_is_abstract() -> None:
    with pytest.raises(TypeError):
        Backoff()  # type: ignore[abstract]


def test_reprs() -> None:
    assert repr(NoBackoff()) == "NoBackoff()"
    assert repr(ConstantBackoff(1)) == "ConstantBackoff(1.0)"
    assert repr(ExponentialWithJitterBackoff()) == (
        "ExponentialWithJitterBackoff(base=0.05, cap=2.0)"
    )
    assert repr(RetryPolicy(1, NoBackoff())) == "RetryPolicy(retries=1, backoff=NoBackoff())"
