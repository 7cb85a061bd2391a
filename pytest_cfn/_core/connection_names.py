"""Our connections' names, read back from ``CLIENT LIST``: the one parser every count uses.

Every connection of ours is named ``cfn:{role}:{swarm}:{owner}[@{namespace}]`` with CLIENT
SETNAME (written by :func:`connection_name`, here too). ``role`` is
``{subsystem}-{pub|sub}`` (``event-pub``, ``message-sub``, ...) or a bare role of a test's own
connection; ``owner`` is an agent (one bus per agent) or a process (buses sharing connections).
Ids and namespaces hold no ``:`` or ``@`` (see :mod:`pytest_cfn._core.ids`), so the fields
split without ambiguity; anything else is not ours and parses to None.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OUR_PREFIX", "ConnectionName", "connection_name", "parse_connection_name"]

OUR_PREFIX = "cfn:"


def connection_name(role: str, swarm: str, agent: str, namespace: str) -> str:
    """``cfn:{role}:{swarm}:{agent}[@{namespace}]``, as shown by ``CLIENT LIST``."""
    base = f"{OUR_PREFIX}{role}:{swarm}:{agent}"
    return f"{base}@{namespace}" if namespace else base


@dataclass(frozen=True)
class ConnectionName:
    """The fields of one of our connection names."""

    role: str
    swarm: str
    owner: str
    namespace: str = ""

    @property
    def subsystem(self) -> str:
        """``event`` of ``event-pub``: ADR-002 counts connections per subsystem."""
        return self.role.rsplit("-", 1)[0]


def parse_connection_name(name: str) -> ConnectionName | None:
    """The fields of ``name``, or None when it is not one of our connection names."""
    if not name.startswith(OUR_PREFIX):
        return None
    body, at, namespace = name[len(OUR_PREFIX):].partition("@")
    fields = body.split(":")
    if len(fields) != 3 or not all(fields) or (at and not namespace) or "@" in namespace:
        return None
    role, swarm, owner = fields
    return ConnectionName(role, swarm, owner, namespace)
