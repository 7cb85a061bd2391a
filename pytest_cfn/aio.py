"""asyncio front end: the same names and arguments as ``pytest_cfn``, awaited."""

from __future__ import annotations

from pytest_cfn._async.event_bus import EventBus

__all__ = ["EventBus"]
