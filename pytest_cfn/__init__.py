"""pytest-cfn: agent coordination on Redis pub/sub (ADR-002), tested and measured for real.

Sync front end here; the asyncio twins with the same names live in ``pytest_cfn.aio``.
"""

from __future__ import annotations

from pytest_cfn._core.envelope import Envelope
from pytest_cfn._core.inbound import MalformedMessage
from pytest_cfn._core.options import BusOptions
from pytest_cfn._errors import (
    BusClosedError,
    CfnError,
    CircuitOpenError,
    ConnectionLostError,
    InvalidIdError,
    InvalidOptionError,
    MalformedMessageError,
    MessageTooLargeError,
    PublishFailedError,
    RequestTimeoutError,
    ServerNotFoundError,
    ServerStartError,
    SubscribeFailedError,
    ThrottledError,
)
from pytest_cfn._sync.event_bus import EventBus

__version__ = "0.1.0"

__all__ = [
    "BusClosedError",
    "BusOptions",
    "CfnError",
    "CircuitOpenError",
    "ConnectionLostError",
    "Envelope",
    "EventBus",
    "InvalidIdError",
    "InvalidOptionError",
    "MalformedMessage",
    "MalformedMessageError",
    "MessageTooLargeError",
    "PublishFailedError",
    "RequestTimeoutError",
    "ServerNotFoundError",
    "ServerStartError",
    "SubscribeFailedError",
    "ThrottledError",
    "__version__",
]
