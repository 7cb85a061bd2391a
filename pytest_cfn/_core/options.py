"""Settings shared by the Event Bus and the Messenger, validated once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from pytest_cfn._core.envelope import FORMATS
from pytest_cfn._core.outbound import DEFAULT_MAX_MESSAGE_BYTES
from pytest_cfn._core.signing import SigningKeyOption, signing_keys
from pytest_cfn._errors import InvalidOptionError, UnknownSettingError


@dataclass(frozen=True)
class BusOptions:
    """Tunables of a bus; every field has the ADR-002 default where the ADR names one."""

    namespace: str = ""
    codec: str = "json"
    route_cache_size: int = 10_000
    route_ttl: float = 60.0
    route_overrides: bool = False
    throttle_rate: float | None = None
    throttle_burst: float | None = None
    breaker_failures: int = 5
    breaker_reset: float = 30.0
    breaker_successes: int = 3
    retries: int = 3
    backoff_base: float = 0.05
    backoff_cap: float = 2.0
    queue_size: int = 10_000
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ping_interval: float = 5.0
    ping_timeout: float = 2.0
    connect_timeout: float = 5.0
    socket_timeout: float = 5.0
    ack_window: int = 64
    critical_buffer: int = 10_000
    """Priority 8-9 publishes kept until Redis acknowledges them (across reconnects);
    a critical publish() raises CriticalBufferFullError at once when this many wait."""
    dispatch_batch: int = 256
    keep_malformed: int = 100
    inline_dispatch: bool = True
    """Let handlers that have proved fast run in the socket reader (see ``engine``)."""
    signing_key: SigningKeyOption = field(default=None, repr=False)
    """HMAC-SHA256 signed envelopes (see ``pytest_cfn._core.signing``): bytes, a
    ``{key_id: secret}`` ring or ``SigningKeys``; None sends and accepts unsigned ones."""

    def __post_init__(self) -> None:
        signing_keys(self.signing_key)
        if self.codec not in FORMATS:
            raise InvalidOptionError(f"codec {self.codec!r} is not known; use one of {FORMATS}")
        positive = {
            "route_ttl": self.route_ttl,
            "breaker_reset": self.breaker_reset,
            "ping_interval": self.ping_interval,
            "ping_timeout": self.ping_timeout,
            "connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
            "backoff_cap": self.backoff_cap,
        }
        for name, value in positive.items():
            if not value > 0:
                raise InvalidOptionError(f"{name} must be > 0 seconds, got {value!r}")
        at_least_one = {
            "breaker_failures": self.breaker_failures,
            "breaker_successes": self.breaker_successes,
            "queue_size": self.queue_size,
            "max_message_bytes": self.max_message_bytes,
            "ack_window": self.ack_window,
            "critical_buffer": self.critical_buffer,
            "dispatch_batch": self.dispatch_batch,
        }
        for name, value in at_least_one.items():
            if type(value) is not int or value < 1:
                raise InvalidOptionError(f"{name} must be an integer >= 1, got {value!r}")
        if type(self.route_cache_size) is not int or self.route_cache_size < 0:
            raise InvalidOptionError(
                f"route_cache_size must be an integer >= 0 (0 = no cache), got "
                f"{self.route_cache_size!r}"
            )
        if type(self.retries) is not int or self.retries < 0:
            raise InvalidOptionError(f"retries must be an integer >= 0, got {self.retries!r}")
        if self.throttle_rate is not None and not self.throttle_rate > 0:
            raise InvalidOptionError(
                f"throttle_rate must be > 0 events/s, or None for no throttle; got "
                f"{self.throttle_rate!r}"
            )


def bus_options(settings: dict[str, Any], also: tuple[str, ...] = ()) -> BusOptions:
    """``BusOptions(**settings)``, with an unknown setting named beside the ones there are
    (``also``: the settings the caller takes out before, named in the message too)."""
    known = {f.name for f in fields(BusOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        listed = ", ".join(sorted(known))
        if also:
            listed += f" (and {', '.join(also)} for the connection)"
        raise UnknownSettingError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"the settings are: {listed}"
        )
    return BusOptions(**settings)
