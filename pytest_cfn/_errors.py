"""Every exception pytest-cfn raises on purpose, in one hierarchy.

Each message says what was wrong and what is allowed or what to do. OS-level
errors (``ConnectionRefusedError``, ``socket.timeout``, ``BrokenPipeError``...)
never reach a caller: the backends (``pytest_cfn._backends``) map them to
:class:`ServerUnavailableError` (no connection could be made) or
:class:`ConnectionLostError` (a connection broke). Error replies from Redis are
:class:`ServerReplyError`; an ACL refusal (``NOPERM``) is
:class:`PermissionDeniedError`.

    CfnError
    ├── InvalidIdError, InvalidOptionError, MessageTooLargeError  (also ValueError)
    ├── InvalidHistogramError                                      (also ValueError)
    ├── MalformedMessageError
    │   └── ForgedMessageError
    ├── BusClosedError
    ├── ConnectionFailedError                                      (also ConnectionError)
    │   ├── ServerUnavailableError
    │   └── ConnectionLostError
    │       └── ReplyTimeoutError                                  (also TimeoutError)
    ├── ServerReplyError
    │   ├── ServerRefusedError
    │   └── PermissionDeniedError
    ├── PublishFailedError
    │   └── CriticalBufferFullError
    ├── CircuitOpenError, ThrottledError
    ├── SubscribeFailedError
    ├── RequestTimeoutError (also TimeoutError), RequestFailedError
    ├── SwarmNotFoundError (also LookupError), RecoveryRefusedError
    ├── TlsError
    │   └── TlsHandshakeTimeoutError
    └── ServerNotFoundError, ServerStartError
                             └── ServerWithoutTlsError
"""

from __future__ import annotations


class CfnError(Exception):
    """Base class of every error pytest-cfn raises on purpose."""


class InvalidIdError(CfnError, ValueError):
    """A swarm id, agent id, event type or pattern failed the allow-list."""


class InvalidOptionError(CfnError, ValueError):
    """A setting (priority, size, rate, URL...) is out of its allowed range."""


class UnknownSettingError(InvalidOptionError, TypeError):
    """A keyword setting a bus does not have (also a TypeError, as any unknown keyword is)."""


class MessageTooLargeError(CfnError, ValueError):
    """An encoded message is larger than the configured limit."""


class MalformedMessageError(CfnError):
    """Bytes on a subscribed channel are not a valid envelope."""


class CircuitOpenError(CfnError):
    """Publish refused because the circuit breaker is open."""


class ThrottledError(CfnError):
    """Publish refused because the priority's token bucket is empty."""


class PublishFailedError(CfnError):
    """Publishes could not be written or were refused by Redis (after all retries)."""


class CriticalBufferFullError(PublishFailedError):
    """A priority 8-9 publish was refused because the buffer of unacknowledged critical
    publishes is full (``critical_buffer=``); nothing was accepted or dropped."""


class ServerNotFoundError(CfnError):
    """No redis-server binary could be found to start."""


class ServerStartError(CfnError):
    """A redis-server process was started but did not become ready."""


class ServerWithoutTlsError(ServerStartError):
    """The redis-server binary was built without TLS support (it refuses ``--tls-port``)."""


class ConnectionFailedError(CfnError, ConnectionError):
    """Redis could not be reached, or a connection to it broke."""


class ServerUnavailableError(ConnectionFailedError):
    """No connection to Redis could be made (refused, timed out, unreachable)."""


class ConnectionLostError(ConnectionFailedError):
    """An established connection to Redis broke and could not be re-established."""


class ReplyTimeoutError(ConnectionLostError, TimeoutError):
    """Redis sent nothing within the socket timeout (a hung or paused server)."""


class ServerReplyError(CfnError):
    """Redis answered a command with an error reply (``-ERR ...``)."""


class ServerRefusedError(ServerReplyError):
    """The server refused the connection handshake (AUTH, SELECT or CLIENT SETNAME)."""


class PermissionDeniedError(ServerReplyError):
    """An ACL forbids a command, key or channel this library needs (``NOPERM``);
    ``cfn acl --swarm S`` prints the rules one swarm's agents need."""


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


ACL_HINT = "run `cfn acl --swarm SWARM` for the ACL rules a swarm's agents need"


def reply_error(reply: ServerReplyError, doing: str) -> ServerReplyError:
    """The error to raise for an error reply: :class:`PermissionDeniedError` for an ACL
    refusal (also inside a script), else the reply itself. ``doing`` says what was tried."""
    text = str(reply)
    if "NOPERM" in text:
        return PermissionDeniedError(f"Redis refused {doing}: {text}; {ACL_HINT}")
    return reply


ALL_ERRORS = (
    CfnError,
    InvalidIdError,
    InvalidOptionError,
    UnknownSettingError,
    MessageTooLargeError,
    InvalidHistogramError,
    MalformedMessageError,
    ForgedMessageError,
    BusClosedError,
    ConnectionFailedError,
    ServerUnavailableError,
    ConnectionLostError,
    ReplyTimeoutError,
    ServerReplyError,
    ServerRefusedError,
    PermissionDeniedError,
    PublishFailedError,
    CriticalBufferFullError,
    CircuitOpenError,
    ThrottledError,
    SubscribeFailedError,
    RequestTimeoutError,
    RequestFailedError,
    SwarmNotFoundError,
    RecoveryRefusedError,
    ServerNotFoundError,
    ServerStartError,
    ServerWithoutTlsError,
    TlsError,
    TlsHandshakeTimeoutError,
)
