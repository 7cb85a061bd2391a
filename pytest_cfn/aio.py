"""asyncio front end: the same names and arguments as ``pytest_cfn``, awaited.

Exported lazily (PEP 562), like ``pytest_cfn``: a name's module loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "EventBus": "pytest_cfn._async.event_bus",
    "Messenger": "pytest_cfn._async.messenger",
    "SwarmState": "pytest_cfn._async.swarm_state",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers: the same names, imported eagerly
    from pytest_cfn._async.event_bus import EventBus as EventBus
    from pytest_cfn._async.messenger import Messenger as Messenger
    from pytest_cfn._async.swarm_state import SwarmState as SwarmState


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
