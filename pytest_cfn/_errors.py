"""Exception classes. Each message says what was wrong and what is allowed."""

from __future__ import annotations


class CfnError(Exception):
    """Base class of every error pytest-cfn raises on purpose."""


class InvalidIdError(CfnError, ValueError):
    """A swarm id, agent id, event type or pattern failed the allow-list."""


class InvalidOptionError(CfnError, ValueError):
    """A setting (priority, size, rate, URL...) is out of its allowed range."""


class MessageTooLargeError(CfnError, ValueError):
    """An encoded message is larger than the configured limit."""


class MalformedMessageError(CfnError):
    """Bytes on a subscribed channel are not a valid envelope."""


class CircuitOpenError(CfnError):
    """Publish refused because the circuit breaker is open."""


class ThrottledError(CfnError):
    """Publish refused because the priority's token bucket is empty."""


class PublishFailedError(CfnError):
    """Publish failed after all retries."""


class ServerNotFoundError(CfnError):
    """No redis-server binary could be found to start."""


class ServerStartError(CfnError):
    """A redis-server process was started but did not become ready."""


class ServerWithoutTlsError(ServerStartError):
    """The redis-server binary was built without TLS support (it refuses ``--tls-port``)."""


class ConnectionLostError(CfnError):
    """The connection to Redis is gone and could not be re-established."""


class TlsError(CfnError):
    """TLS to Redis failed: an untrusted or wrong certificate, a client certificate
    missing or refused, or TLS and plain text mixed up between client and port."""


class TlsHandshakeTimeoutError(TlsError):
    """The TLS handshake got no answer in time (a plain-text port, or a hung server)."""


class BusClosedError(CfnError):
    """An operation was attempted on a closed bus."""


class RequestTimeoutError(CfnError, TimeoutError):
    """A request got no reply within its timeout."""


class InvalidHistogramError(CfnError, ValueError):
    """An encoded latency histogram could not be decoded or has a foreign layout."""


class SubscribeFailedError(CfnError):
    """Redis refused or did not confirm a subscription."""


class RequestFailedError(CfnError):
    """The swarm that got a request answered that its handler failed."""


class SwarmNotFoundError(CfnError, LookupError):
    """No state (and no checkpoint) is stored for a swarm id."""


class RecoveryRefusedError(CfnError):
    """A swarm cannot be recovered: it finished, or its heartbeat is still fresh."""


class ForgedMessageError(MalformedMessageError):
    """An envelope is unsigned or its HMAC tag does not match, on a bus with ``signing_key``."""
