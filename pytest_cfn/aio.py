"""asyncio front end: the same names and arguments as ``pytest_cfn``, awaited.

The exception classes are the same objects as ``pytest_cfn``'s (one hierarchy for
both front ends), re-exported here so ``from pytest_cfn.aio import ...`` finds them.
"""

from __future__ import annotations

from pytest_cfn._async.event_bus import EventBus
from pytest_cfn._async.messenger import Messenger
from pytest_cfn._async.swarm_state import SwarmState
from pytest_cfn._errors import (
    BusClosedError,
    CfnError,
    CircuitOpenError,
    ConnectionFailedError,
    ConnectionLostError,
    CriticalBufferFullError,
    InvalidHistogramError,
    InvalidIdError,
    InvalidOptionError,
    MalformedMessageError,
    MessageTooLargeError,
    PermissionDeniedError,
    PublishFailedError,
    RecoveryRefusedError,
    ReplyTimeoutError,
    RequestFailedError,
    RequestTimeoutError,
    ServerNotFoundError,
    ServerRefusedError,
    ServerReplyError,
    ServerStartError,
    ServerUnavailableError,
    SubscribeFailedError,
    SwarmNotFoundError,
    ThrottledError,
)

__all__ = [
    "BusClosedError",
    "CfnError",
    "CircuitOpenError",
    "ConnectionFailedError",
    "ConnectionLostError",
    "CriticalBufferFullError",
    "EventBus",
    "InvalidHistogramError",
    "InvalidIdError",
    "InvalidOptionError",
    "MalformedMessageError",
    "MessageTooLargeError",
    "Messenger",
    "PermissionDeniedError",
    "PublishFailedError",
    "RecoveryRefusedError",
    "ReplyTimeoutError",
    "RequestFailedError",
    "RequestTimeoutError",
    "ServerNotFoundError",
    "ServerRefusedError",
    "ServerReplyError",
    "ServerStartError",
    "ServerUnavailableError",
    "SubscribeFailedError",
    "SwarmNotFoundError",
    "SwarmState",
    "ThrottledError",
]
