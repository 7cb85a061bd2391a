"""pytest-cfn: agent coordination on Redis pub/sub (ADR-002), tested and measured for real.

Sync front end here; the asyncio twins with the same names live in ``pytest_cfn.aio``.

Names are exported lazily (PEP 562): ``import pytest_cfn`` — which pytest does for the plugin
on every start — loads nothing until a name is used. To export a new name, add it to
``_EXPORTS`` (name -> module that defines it); ``__all__`` follows.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_ERRORS = "pytest_cfn._errors"
_EXPORTS: dict[str, str] = {
    "BusClosedError": _ERRORS,
    "BusOptions": "pytest_cfn._core.options",
    "CfnError": _ERRORS,
    "CircuitOpenError": _ERRORS,
    "ConnectionFailedError": _ERRORS,
    "ConnectionLostError": _ERRORS,
    "CriticalBufferFullError": _ERRORS,
    "CriticalOptions": "pytest_cfn._core.critical_log",
    "Envelope": "pytest_cfn._core.envelope",
    "EventBus": "pytest_cfn._sync.event_bus",
    "ForgedMessageError": _ERRORS,
    "InvalidHistogramError": _ERRORS,
    "InvalidIdError": _ERRORS,
    "InvalidOptionError": _ERRORS,
    "UnknownSettingError": _ERRORS,
    "MalformedMessage": "pytest_cfn._core.inbound",
    "MalformedMessageError": _ERRORS,
    "Message": "pytest_cfn._core.message",
    "MessageTooLargeError": _ERRORS,
    "Messenger": "pytest_cfn._sync.messenger",
    "PermissionDeniedError": _ERRORS,
    "PublishFailedError": _ERRORS,
    "RecoveredSwarm": "pytest_cfn._core.swarm_state",
    "RecoveryRefusedError": _ERRORS,
    "ReplyTimeoutError": _ERRORS,
    "RequestFailedError": _ERRORS,
    "RequestTimeoutError": _ERRORS,
    "ServerCheckError": "pytest_cfn.server_probe",
    "ServerNotFoundError": _ERRORS,
    "ServerRefusedError": _ERRORS,
    "ServerReplyError": _ERRORS,
    "ServerStartError": _ERRORS,
    "ServerUnavailableError": _ERRORS,
    "SharedConnections": "pytest_cfn._sync.connection_share",
    "SigningKeys": "pytest_cfn._core.signing",
    "SubscribeFailedError": _ERRORS,
    "SwarmNotFoundError": _ERRORS,
    "SwarmRecord": "pytest_cfn._core.swarm_state",
    "SwarmState": "pytest_cfn._sync.swarm_state",
    "ThrottledError": _ERRORS,
    "ServerWithoutTlsError": _ERRORS,
    "TlsError": _ERRORS,
    "TlsHandshakeTimeoutError": _ERRORS,
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:  # for type checkers: the same names, imported eagerly
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
    from pytest_cfn._sync.connection_share import SharedConnections as SharedConnections
    from pytest_cfn._sync.event_bus import EventBus as EventBus
    from pytest_cfn._sync.messenger import Messenger as Messenger
    from pytest_cfn._sync.swarm_state import SwarmState as SwarmState
    from pytest_cfn.server_probe import ServerCheckError as ServerCheckError


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use, and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_cfn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
