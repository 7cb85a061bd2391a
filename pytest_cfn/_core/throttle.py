"""Priorities, and the token bucket that throttles the low ones.

ADR-002 defines 9 priority levels: 9 and 8 are critical (they also bypass the
circuit breaker), 7 and 6 are lifecycle and task assignment, and 5 down to 1
are general events, the only ones subject to throttling. Throttling is off by
default; when a rate is set, priorities 1-5 share one bucket so a flood of
general events cannot starve the coordination traffic above them.
"""

from __future__ import annotations

import math
from typing import Any

from pytest_cfn._errors import InvalidOptionError

MIN_PRIORITY = 1
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5
THROTTLED_MAX_PRIORITY = 5
PRIORITY_RANGE = "priorities are integers 1 (low) to 9 (critical)"


def validate_priority(p: object) -> int:
    """Return ``p`` if it is an int from 1 to 9, else raise :class:`InvalidOptionError`."""
    if isinstance(p, bool) or not isinstance(p, int):
        raise InvalidOptionError(f"priority {p!r} is a {type(p).__name__}; {PRIORITY_RANGE}")
    if not MIN_PRIORITY <= p <= MAX_PRIORITY:
        raise InvalidOptionError(f"priority {p} is out of range; {PRIORITY_RANGE}")
    return int(p)


def _check_rate(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidOptionError(f"throttle {name} must be a finite number > 0, got {value!r}")
    return float(value)


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full.

    Time is passed in. The first :meth:`take` finds the bucket full whatever
    ``now`` is; a ``now`` earlier than the last one adds nothing.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = _check_rate("rate", rate)
        self.burst = max(1.0, self.rate) if burst is None else _check_rate("burst", burst)
        self._tokens = self.burst
        # -inf makes the first refill fill the bucket without a branch for "never used"
        self._last = -math.inf

    def _refill(self, now: float) -> float:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now
        return self._tokens

    def take(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are that many; False (and take none) otherwise."""
        tokens = self._tokens
        elapsed = now - self._last
        if elapsed > 0:  # _refill, inlined: this is on every throttled publish
            tokens = min(self.burst, tokens + elapsed * self.rate)
            self._last = now
        if tokens >= n:
            self._tokens = tokens - n
            return True
        self._tokens = tokens
        if n > self.burst:
            raise InvalidOptionError(
                f"cannot take {n} tokens from a bucket that holds at most {self.burst}"
            )
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at ``now``."""
        return self._refill(now)

    def time_until(self, now: float, n: float = 1.0) -> float:
        """Seconds from ``now`` until ``n`` tokens are available (0.0 if they are now)."""
        if n > self.burst:
            raise InvalidOptionError(
                f"{n} tokens will never be available from a bucket that holds at most {self.burst}"
            )
        missing = n - self._refill(now)
        return missing / self.rate if missing > 0 else 0.0

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst})"


class PriorityThrottle:
    """Throttles priorities 1-5 through one shared bucket; 6-9 pass untouched.

    ``rate=None`` (the default) turns throttling off. ``allow`` does not check
    the priority: validate it once where it enters (:func:`validate_priority`).
    ``allowed`` counts what ``allow`` let through; a publish skips the call when
    ``enabled`` is False, so with the throttle off it stays 0 for the Event Bus.
    """

    __slots__ = ("_bucket", "allowed", "enabled", "throttled")

    def __init__(self, rate: float | None = None, burst: float | None = None) -> None:
        if rate is None:
            if burst is not None:
                raise InvalidOptionError("throttle burst was given without a rate; set rate too")
            self._bucket: TokenBucket | None = None
        else:
            self._bucket = TokenBucket(rate, burst)
            if self._bucket.burst < 1:
                raise InvalidOptionError(
                    f"throttle burst is {burst}; it must be >= 1 since one publish takes one token"
                )
        self.enabled = self._bucket is not None
        """False with ``rate=None``: every publish passes (a plain attribute, read first)."""
        self.allowed = 0
        self.throttled = 0

    @property
    def rate(self) -> float | None:
        return None if self._bucket is None else self._bucket.rate

    @property
    def burst(self) -> float | None:
        return None if self._bucket is None else self._bucket.burst

    def allow(self, priority: int, now: float) -> bool:
        """True if an event of ``priority`` may be published at ``now``."""
        bucket = self._bucket
        if bucket is None or priority > THROTTLED_MAX_PRIORITY or bucket.take(now):
            self.allowed += 1
            return True
        self.throttled += 1
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until a throttled priority would be allowed again (0.0 if now, or off)."""
        return 0.0 if self._bucket is None else self._bucket.time_until(now)

    def stats(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "throttled": self.throttled,
            "rate": self.rate,
            "burst": self.burst,
        }

    def __repr__(self) -> str:
        return f"PriorityThrottle(rate={self.rate}, burst={self.burst})"
