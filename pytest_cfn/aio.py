"""asyncio front end: the same names and arguments as ``pytest_cfn``, awaited.

Exported lazily (PEP 562), like ``pytest_cfn``: a name's module loads on first use.
The exception classes and the value classes (options, envelopes, records) are ``pytest_cfn``'s
own objects: one hierarchy and one set of values for both front ends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_ERRORS = "pytest_cfn._errors"
_EXPORTS: dict[str, str] = {
    "BusClosedError": _ERRORS,
    "BusOptions": "pytest_cfn._core.options",
    "CriticalOptions": "pytest_cfn._core.critical_log",
    "Envelope": "pytest_cfn._core.envelope",
    "MalformedMessage": "pytest_cfn._core.inbound",
    "Message": "pytest_cfn._core.message",
    "RecoveredSwarm": "pytest_cfn._core.swarm_state",
    "SigningKeys": "pytest_cfn._core.signing",
    "SwarmRecord": "pytest_cfn._core.swarm_state",
    "CfnError": _ERRORS,
    "CircuitOpenError": _ERRORS,
    "ConnectionFailedError": _ERRORS,
    "ConnectionLostError": _ERRORS,
    "CriticalBufferFullError": _ERRORS,
    "EventBus": "pytest_cfn._async.event_bus",
    "ForgedMessageError": _ERRORS,
    "InvalidHistogramError": _ERRORS,
    "InvalidIdError": _ERRORS,
    "InvalidOptionError": _ERRORS,
    "UnknownSettingError": _ERRORS,
    "MalformedMessageError": _ERRORS,
    "MessageTooLargeError": _ERRORS,
    "Messenger": "pytest_cfn._async.messenger",
    "PermissionDeniedError": _ERRORS,
    "PublishFailedError": _ERRORS,
    "RecoveryRefusedError": _ERRORS,
    "ReplyTimeoutError": _ERRORS,
    "RequestFailedError": _ERRORS,
    "RequestTimeoutError": _ERRORS,
    "ServerNotFoundError": _ERRORS,
    "ServerRefusedError": _ERRORS,
    "ServerReplyError": _ERRORS,
    "ServerStartError": _ERRORS,
    "ServerUnavailableError": _ERRORS,
    "SharedConnections": "pytest_cfn._async.connection_share",
    "SubscribeFailedError": _ERRORS,
    "SwarmNotFoundError": _ERRORS,
    "SwarmState": "pytest_cfn._async.swarm_state",
    "ThrottledError": _ERRORS,
    "ServerWithoutTlsError": _ERRORS,
    "ServerCheckError": "pytest_cfn.server_probe",
    "TlsError": _ERRORS,
    "TlsHandshakeTimeoutError": _ERRORS,
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers: the same names, imported eagerly
    from pytest_cfn._async.connection_share import SharedConnections as SharedConnections
    from pytest_cfn._async.event_bus import EventBus as EventBus
    from pytest_cfn._async.messenger import Messenger as Messenger
    from pytest_cfn._async.swarm_state import SwarmState as SwarmState
    from pytest_cfn._core.critical_log import CriticalOptions as CriticalOptions
    from pytest_cfn._core.envelope import Envelope as Envelope
    from pytest_cfn._core.inbound import MalformedMessage as MalformedMessage
    from pytest_cfn._core.message import Message as Message
    from pytest_cfn._core.options import BusOptions as BusOptions
    from pytest_cfn._core.signing import SigningKeys as SigningKeys
    from pytest_cfn._core.swarm_state import RecoveredSwarm as RecoveredSwarm
    from pytest_cfn._core.swarm_state import SwarmRecord as SwarmRecord
    from pytest_cfn._errors import BusClosedError as BusClosedError
    from pytest_cfn._errors import CfnError as CfnError
    from pytest_cfn._errors import CircuitOpenError as CircuitOpenError
    from pytest_cfn._errors import ConnectionFailedError as ConnectionFailedError
    from pytest_cfn._errors import ConnectionLostError as ConnectionLostError
    from pytest_cfn._errors import CriticalBufferFullError as CriticalBufferFullError
    from pytest_cfn._errors import ForgedMessageError as ForgedMessageError
    from pytest_cfn._errors import InvalidHistogramError as InvalidHistogramError
    from pytest_cfn._errors import InvalidIdError as InvalidIdError
    from pytest_cfn._errors import InvalidOptionError as InvalidOptionError
    from pytest_cfn._errors import MalformedMessageError as MalformedMessageError
    from pytest_cfn._errors import MessageTooLargeError as MessageTooLargeError
    from pytest_cfn._errors import PermissionDeniedError as PermissionDeniedError
    from pytest_cfn._errors import PublishFailedError as PublishFailedError
    from pytest_cfn._errors import RecoveryRefusedError as RecoveryRefusedError
    from pytest_cfn._errors import ReplyTimeoutError as ReplyTimeoutError
    from pytest_cfn._errors import RequestFailedError as RequestFailedError
    from pytest_cfn._errors import RequestTimeoutError as RequestTimeoutError
    from pytest_cfn._errors import ServerNotFoundError as ServerNotFoundError
    from pytest_cfn._errors import ServerRefusedError as ServerRefusedError
    from pytest_cfn._errors import ServerReplyError as ServerReplyError
    from pytest_cfn._errors import ServerStartError as ServerStartError
    from pytest_cfn._errors import ServerUnavailableError as ServerUnavailableError
    from pytest_cfn._errors import ServerWithoutTlsError as ServerWithoutTlsError
    from pytest_cfn._errors import SubscribeFailedError as SubscribeFailedError
    from pytest_cfn._errors import SwarmNotFoundError as SwarmNotFoundError
    from pytest_cfn._errors import ThrottledError as ThrottledError
    from pytest_cfn._errors import TlsError as TlsError
    from pytest_cfn._errors import TlsHandshakeTimeoutError as TlsHandshakeTimeoutError
    from pytest_cfn._errors import UnknownSettingError as UnknownSettingError
    from pytest_cfn.server_probe import ServerCheckError as ServerCheckError


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use, and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_cfn.aio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
