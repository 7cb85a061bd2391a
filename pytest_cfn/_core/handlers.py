"""Local handler registry: one Redis subscription per swarm, many local handlers.

``PUBLISH`` costs O(patterns) on the whole server, so a bus subscribes its swarm's
pattern once and matches event types to handlers here, in-process. The match for
each event type is cached until the set of handlers changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_cfn._core.ids import type_matches, validate_type_pattern

Handler = Callable[[Any], Any]


class HandlerRegistry:
    """Maps relative type patterns (``agent.*``) to handlers, in registration order."""

    __slots__ = ("_by_type", "_entries", "_next_token")

    def __init__(self) -> None:
        self._entries: list[tuple[int, str, Handler]] = []
        self._by_type: dict[str, tuple[Handler, ...]] = {}
        self._next_token = 1

    def add(self, pattern: str, handler: Handler) -> int:
        """Register ``handler`` for ``pattern``; returns a token for :meth:`remove`."""
        validate_type_pattern(pattern)
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        token = self._next_token
        self._next_token += 1
        self._entries.append((token, pattern, handler))
        self._by_type.clear()
        return token

    def remove(self, token: int) -> bool:
        before = len(self._entries)
        self._entries = [e for e in self._entries if e[0] != token]
        self._by_type.clear()
        return len(self._entries) != before

    def match(self, event_type: str) -> tuple[Handler, ...]:
        found = self._by_type.get(event_type)
        if found is None:
            found = tuple(h for _, p, h in self._entries if type_matches(p, event_type))
            if len(self._by_type) > 10_000:
                self._by_type.clear()
            self._by_type[event_type] = found
        return found

    def __len__(self) -> int:
        return len(self._entries)

    def patterns(self) -> list[str]:
        return [p for _, p, _ in self._entries]
