"""Channel and key names, with an optional namespace prefix for isolation.

Redis database numbers do not isolate pub/sub (a PUBLISH on db 0 reaches a
subscriber on db 5), so tests and tenants sharing a server are isolated by a
namespace prefix on every channel and key instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_cfn._core.ids import (
    validate_event_type,
    validate_id,
    validate_namespace,
    validate_swarm_id,
)


@dataclass(frozen=True)
class ChannelNames:
    """Builds and parses ``[ns:]event:{swarm}:{type}`` and ``[ns:]message:{from}:{to}``."""

    namespace: str = ""

    def __post_init__(self) -> None:
        if self.namespace:
            validate_namespace(self.namespace)

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:" if self.namespace else ""

    def event(self, swarm: str, event_type: str) -> str:
        return f"{self.prefix}event:{swarm}:{event_type}"

    def event_pattern(self, swarm: str) -> str:
        """The one pattern a bus subscribes for its swarm; local handlers are matched in-process."""
        return f"{self.prefix}event:{swarm}:*"

    def message(self, from_swarm: str, to_swarm: str) -> str:
        return f"{self.prefix}message:{from_swarm}:{to_swarm}"

    def inbox_pattern(self, to_swarm: str) -> str:
        return f"{self.prefix}message:*:{to_swarm}"

    def key(self, *parts: str) -> str:
        """A Redis key inside the namespace, e.g. ``key("swarm", "s1")`` -> ``ns:swarm:s1``.

        The first part is a kind listed in ``ids.RESERVED_NAMESPACES`` (checked by the
        tests), so no namespace can equal it."""
        return self.prefix + ":".join(parts)

    def key_pattern(self, *parts: str) -> str:
        """A SCAN match pattern inside the namespace; the last part may be ``*``."""
        return self.prefix + ":".join(parts)

    def parse_event(self, channel: str) -> tuple[str, str] | None:
        """``(swarm, type)`` of an event channel, or None if it is not a valid one."""
        rest = self._strip(channel, "event:")
        if rest is None:
            return None
        swarm, sep, event_type = rest.partition(":")
        if not sep:
            return None
        try:
            validate_swarm_id(swarm)
            validate_event_type(event_type)
        except ValueError:
            return None
        return swarm, event_type

    def parse_message(self, channel: str) -> tuple[str, str] | None:
        """``(from_swarm, to_swarm)`` of a message channel, or None if it is not a valid one."""
        rest = self._strip(channel, "message:")
        if rest is None:
            return None
        from_swarm, sep, to_swarm = rest.partition(":")
        if not sep:
            return None
        try:
            validate_id(from_swarm, "swarm id")
            validate_id(to_swarm, "swarm id")
        except ValueError:
            return None
        return from_swarm, to_swarm

    def _strip(self, channel: str, kind: str) -> str | None:
        head = self.prefix + kind
        if not channel.startswith(head):
            return None
        return channel[len(head) :]
