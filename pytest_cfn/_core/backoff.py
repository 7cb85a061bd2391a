"""Backoff strategies and the retry policy that uses them (the shape of redis-py's backoff.py).

``compute(failures)`` gives the delay before the next attempt after ``failures``
failures (1 for the first retry), as redis-py's ``Retry`` counts. The default,
full jitter with base 0.05 s, caps the first three retries at 0.1, 0.2 and
0.4 s: ADR-002's ``100 * 2**i`` ms, spread out so that many clients that lost
the same server do not all come back at the same instant.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator

from pytest_cfn._errors import InvalidOptionError

DEFAULT_BASE = 0.05
DEFAULT_CAP = 2.0
DEFAULT_RETRIES = 3


def _seconds(owner: str, name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidOptionError(
            f"{owner} {name} must be a finite number of seconds >= 0, got {value!r}"
        )
    return float(value)


def _check_failures(failures: int) -> None:
    if failures < 0:
        raise InvalidOptionError(f"failures is {failures}; it counts failures so far, from 0")


class Backoff(ABC):
    """How long to wait before the next attempt."""

    def reset(self) -> None:  # noqa: B027 - a no-op by default, not abstract
        """Forget any state before a new operation (no strategy here keeps any)."""

    @abstractmethod
    def compute(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures."""


class NoBackoff(Backoff):
    """Retry at once."""

    def compute(self, failures: int) -> float:
        _check_failures(failures)
        return 0.0

    def __repr__(self) -> str:
        return "NoBackoff()"


class ConstantBackoff(Backoff):
    """The same delay every time."""

    def __init__(self, delay: float) -> None:
        self.delay = _seconds("ConstantBackoff", "delay", delay)

    def compute(self, failures: int) -> float:
        _check_failures(failures)
        return self.delay

    def __repr__(self) -> str:
        return f"ConstantBackoff({self.delay})"


class ExponentialBackoff(Backoff):
    """``min(cap, base * 2**failures)``, no jitter (deterministic, for tests and reports)."""

    def __init__(self, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP) -> None:
        name = type(self).__name__
        self.base = _seconds(name, "base", base)
        self.cap = _seconds(name, "cap", cap)
        if self.cap < self.base:
            raise InvalidOptionError(f"{name} cap ({cap}) is below its base ({base})")
        # past this many doublings the cap always wins; clamping avoids float overflow
        self._max_exponent = (
            math.ceil(math.log2(self.cap / self.base)) if self.base > 0 and self.cap > 0 else 0
        )

    def ceiling(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` failures."""
        _check_failures(failures)
        return min(self.cap, self.base * 2.0 ** min(failures, self._max_exponent))

    def compute(self, failures: int) -> float:
        return self.ceiling(failures)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base={self.base}, cap={self.cap})"


class ExponentialWithJitterBackoff(ExponentialBackoff):
    """Full jitter: ``uniform(0, min(cap, base * 2**failures))``."""

    def __init__(
        self,
        base: float = DEFAULT_BASE,
        cap: float = DEFAULT_CAP,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(base, cap)
        self._rng = rng if rng is not None else random.Random()

    def compute(self, failures: int) -> float:
        return self._rng.uniform(0.0, self.ceiling(failures))


class RetryPolicy:
    """How many times to retry, and how long to wait before each retry."""

    __slots__ = ("backoff", "retries")

    def __init__(self, retries: int = DEFAULT_RETRIES, backoff: Backoff | None = None) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidOptionError(
                f"retries must be an integer >= 0 (0 = try once, never retry), got {retries!r}"
            )
        if backoff is not None and not isinstance(backoff, Backoff):
            raise InvalidOptionError(
                f"backoff must be a Backoff (e.g. ExponentialWithJitterBackoff()), "
                f"got {type(backoff).__name__}"
            )
        self.retries = retries
        self.backoff = backoff if backoff is not None else ExponentialWithJitterBackoff()

    @property
    def attempts(self) -> int:
        """Attempts in all: the first try and the retries."""
        return self.retries + 1

    def delays(self) -> Iterator[float]:
        """The ``retries`` delays, before retry 1, 2, ... (``compute(1)``, ``compute(2)``, ...)."""
        self.backoff.reset()
        compute = self.backoff.compute
        for failures in range(1, self.retries + 1):
            yield compute(failures)

    def __repr__(self) -> str:
        return f"RetryPolicy(retries={self.retries}, backoff={self.backoff!r})"
