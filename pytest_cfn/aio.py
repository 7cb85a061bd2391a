"""asyncio front end: the same names and arguments as ``pytest_cfn``, awaited."""

from __future__ import annotations

from pytest_cfn._async.event_bus import EventBus
from pytest_cfn._async.messenger import Messenger
from pytest_cfn._async.swarm_state import SwarmState

__all__ = ["EventBus", "Messenger", "SwarmState"]
