"""pytest-cfn: agent coordination on Redis pub/sub (ADR-002), tested and measured for real.

Sync front end here; the asyncio twins with the same names live in ``pytest_cfn.aio``.
"""

from __future__ import annotations

from pytest_cfn._core.critical_log import CriticalOptions
from pytest_cfn._core.envelope import Envelope
from pytest_cfn._core.inbound import MalformedMessage
from pytest_cfn._core.message import Message
from pytest_cfn._core.options import BusOptions
from pytest_cfn._core.swarm_state import RecoveredSwarm, SwarmRecord
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
from pytest_cfn._sync.event_bus import EventBus
from pytest_cfn._sync.messenger import Messenger
from pytest_cfn._sync.swarm_state import SwarmState

__version__ = "0.1.0"

__all__ = [
    "BusClosedError",
    "BusOptions",
    "CfnError",
    "CircuitOpenError",
    "ConnectionFailedError",
    "ConnectionLostError",
    "CriticalBufferFullError",
    "CriticalOptions",
    "Envelope",
    "EventBus",
    "InvalidHistogramError",
    "InvalidIdError",
    "InvalidOptionError",
    "MalformedMessage",
    "MalformedMessageError",
    "Message",
    "MessageTooLargeError",
    "Messenger",
    "PermissionDeniedError",
    "PublishFailedError",
    "RecoveredSwarm",
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
    "SwarmRecord",
    "SwarmState",
    "ThrottledError",
    "__version__",
]
