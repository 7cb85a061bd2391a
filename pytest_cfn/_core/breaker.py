"""The circuit breaker that stops publishing into a failing Redis.

Theory of operation
-------------------

The breaker watches the outcome of publishes and decides whether the next one
may be tried. It has three states:

- CLOSED: everything is allowed. Each failure adds to a count of consecutive
  failures and each success resets it. ``failure_threshold`` consecutive
  failures trip the breaker: CLOSED -> OPEN.
- OPEN: publishes are refused (counted as ``rejected``) without touching Redis.
  Once ``reset_timeout`` seconds have passed since the breaker opened, the next
  look at the state (``allow``, ``state``, ``record_*``) moves it OPEN ->
  HALF_OPEN. Outcomes recorded while OPEN (from bypassing publishes, or from
  calls already in flight when it opened) change nothing: only the half-open
  trial decides.
- HALF_OPEN: publishes are allowed as a trial. ``success_threshold``
  consecutive successes close it (HALF_OPEN -> CLOSED, counts reset); any
  failure opens it again (HALF_OPEN -> OPEN) and the reset timer restarts.

Priorities 8 and 9 (critical coordination, phase transitions) bypass the
breaker, as ADR-002 requires: ``allow`` always says yes to them, and counts a
yes that the breaker would otherwise have refused as ``bypassed``.

Every state change goes through ``_TRANSITIONS``; an (state, event) pair that
is not in the table is a bug and raises KeyError rather than passing silently.

Time is passed in (``now``, seconds from ``time.monotonic()``); nothing here
reads a clock.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

from pytest_cfn._errors import InvalidOptionError

BYPASS_PRIORITY = 8


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerEvent(str, Enum):
    TRIP = "trip"  # failure_threshold consecutive failures while closed
    RESET_TIMEOUT = "reset_timeout"  # reset_timeout elapsed while open
    TRIAL_FAILED = "trial_failed"  # a failure while half-open
    RECOVERED = "recovered"  # success_threshold consecutive successes while half-open


CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN

_TRANSITIONS: dict[tuple[BreakerState, BreakerEvent], BreakerState] = {
    (CLOSED, BreakerEvent.TRIP): OPEN,
    (OPEN, BreakerEvent.RESET_TIMEOUT): HALF_OPEN,
    (HALF_OPEN, BreakerEvent.TRIAL_FAILED): OPEN,
    (HALF_OPEN, BreakerEvent.RECOVERED): CLOSED,
}


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"circuit breaker {name} must be an integer >= 1, got {value!r}")
    return value


class CircuitBreaker:
    """Closed / open / half-open breaker over publish outcomes (see the module docstring)."""

    __slots__ = (
        "_failure_threshold",
        "_reset_timeout",
        "_retry_at",
        "_state",
        "_success_threshold",
        "bypassed",
        "closed",
        "consecutive_failures",
        "consecutive_successes",
        "opens",
        "rejected",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        success_threshold: int = 3,
    ) -> None:
        self._failure_threshold = _positive_int("failure_threshold", failure_threshold)
        self._success_threshold = _positive_int("success_threshold", success_threshold)
        if (
            isinstance(reset_timeout, bool)
            or not isinstance(reset_timeout, (int, float))
            or not math.isfinite(reset_timeout)
            or reset_timeout <= 0
        ):
            raise InvalidOptionError(
                f"circuit breaker reset_timeout must be a finite number of seconds > 0, "
                f"got {reset_timeout!r}"
            )
        self._reset_timeout = float(reset_timeout)
        self._state = CLOSED
        self.closed = True
        """True while the breaker is closed (a plain attribute: a publish's first check)."""
        self._retry_at = 0.0
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.opens = 0
        self.rejected = 0
        self.bypassed = 0

    @property
    def failure_threshold(self) -> int:
        return self._failure_threshold

    @property
    def reset_timeout(self) -> float:
        return self._reset_timeout

    @property
    def success_threshold(self) -> int:
        return self._success_threshold

    def _fire(self, event: BreakerEvent, now: float) -> None:
        new_state = _TRANSITIONS[(self._state, event)]
        self._state = new_state
        self.closed = new_state is CLOSED
        self.consecutive_successes = 0
        if new_state is OPEN:
            self._retry_at = now + self._reset_timeout
            self.opens += 1
        elif new_state is CLOSED:
            self.consecutive_failures = 0

    def _advance(self, now: float) -> None:
        if self._state is OPEN and now >= self._retry_at:
            self._fire(BreakerEvent.RESET_TIMEOUT, now)

    def allow(self, now: float, priority: int = 5) -> bool:
        """May a publish of ``priority`` be tried now? Priorities >= 8 always may."""
        if self._state is CLOSED:
            return True
        self._advance(now)
        if self._state is not OPEN:
            return True
        if priority >= BYPASS_PRIORITY:
            self.bypassed += 1
            return True
        self.rejected += 1
        return False

    def record_success(self, now: float) -> None:
        if self._state is CLOSED:
            self.consecutive_failures = 0
            return
        self._advance(now)
        if self._state is HALF_OPEN:
            self.consecutive_failures = 0
            self.consecutive_successes += 1
            if self.consecutive_successes >= self._success_threshold:
                self._fire(BreakerEvent.RECOVERED, now)

    def record_failure(self, now: float) -> None:
        self.consecutive_failures += 1
        if self._state is CLOSED:
            if self.consecutive_failures >= self._failure_threshold:
                self._fire(BreakerEvent.TRIP, now)
            return
        self._advance(now)
        if self._state is HALF_OPEN:
            self._fire(BreakerEvent.TRIAL_FAILED, now)

    def state(self, now: float) -> BreakerState:
        """The state at ``now`` (an open breaker whose timeout has passed is half-open)."""
        self._advance(now)
        return self._state

    def retry_after(self, now: float) -> float:
        """Seconds until an open breaker lets a trial through; 0.0 when not open."""
        self._advance(now)
        if self._state is not OPEN:
            return 0.0
        return self._retry_at - now

    def reset(self) -> None:
        """Force the breaker closed (an operator override); the totals are kept."""
        self._state = CLOSED
        self.consecutive_failures = 0
        self.consecutive_successes = 0

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Counters, and the state (as of ``now`` when given, else as last seen).
        ``next_probe_in``: seconds until an open breaker lets a trial publish through
        (0.0 when it is not open; as of ``now``, or of the last look when not given)."""
        if now is not None:
            self._advance(now)
        probe_in = 0.0
        if self._state is OPEN:
            probe_in = max(0.0, self._retry_at - now) if now is not None else self._reset_timeout
        return {
            "state": self._state.value,
            "next_probe_in": probe_in,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_successes": self.consecutive_successes,
            "opens": self.opens,
            "rejected": self.rejected,
            "bypassed": self.bypassed,
            "failure_threshold": self._failure_threshold,
            "reset_timeout": self._reset_timeout,
            "success_threshold": self._success_threshold,
        }

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self._state.value}, "
            f"consecutive_failures={self.consecutive_failures}, opens={self.opens})"
        )
