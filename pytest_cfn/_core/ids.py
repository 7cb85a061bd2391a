"""Allow-list validation of ids before they become channel names or glob patterns.

Swarm ids, agent ids and event types end up inside Redis channel names, and
subscriptions turn them into PSUBSCRIBE glob patterns. A swarm id of ``*`` would
read every swarm, and ``A`` would also match swarm ``A:B`` through ``event:A:*``.
So ids are checked against an allow-list, not a deny-list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from pytest_cfn._errors import InvalidIdError, InvalidOptionError

MAX_ID_LENGTH = 128
_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+\Z")
_PATTERN_RE = re.compile(r"[A-Za-z0-9_.\-*]+\Z")
ALLOWED_ID = "letters, digits, '-', '_' and '.'"


def _describe_bad(value: str, allowed_extra: str = "") -> str:
    for ch in value:
        if ch.isalnum() and ch.isascii():
            continue
        if ch in "_.-" or ch in allowed_extra:
            continue
        if ch.isspace():
            return f"whitespace ({ch!r})"
        if ch in "*?[]\\":
            return f"the glob character {ch!r}"
        return f"{ch!r}"
    return "a character outside the allow-list"


def validate_id(value: object, kind: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidIdError`."""
    if not isinstance(value, str):
        raise InvalidIdError(f"{kind} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdError(f"{kind} is empty; ids may use {ALLOWED_ID}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(
            f"{kind} {value[:20]!r}... is {len(value)} characters; at most {MAX_ID_LENGTH} allowed"
        )
    if not _ID_RE.match(value):
        raise InvalidIdError(
            f"{kind} {value!r} contains {_describe_bad(value)}; ids may use {ALLOWED_ID}"
        )
    return value


def validate_swarm_id(value: object) -> str:
    return validate_id(value, "swarm id")


def validate_agent_id(value: object) -> str:
    return validate_id(value, "agent id")


def validate_event_type(value: object) -> str:
    return validate_id(value, "event type")


def validate_id_list(
    values: Iterable[str] | None, setting: str, what: str, validate: Callable[[object], str]
) -> frozenset[str] | None:
    """A list of ids for ``setting`` (``event_types=``, ``from_swarms=``), each checked by
    ``validate``: None stays None (no limit); a lone string or an empty list is refused."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)):
        raise InvalidOptionError(
            f"{setting} must be a list of {what}s, not one string: {setting}=[{values!r}]"
        )
    checked = frozenset(validate(value) for value in values)
    if not checked:
        raise InvalidOptionError(
            f"{setting} must name at least one {what} (or be None: no limit)"
        )
    return checked


RESERVED_NAMESPACES = frozenset(
    {
        "critical",
        "critical-cursor",
        "event",
        "history",
        "message",
        "route",
        "swarm",
        "swarm-checkpoints",
    }
)
"""The first parts of the default namespace's channel and key names.

Names are ``[ns:]kind:...`` and no id contains ``:``, so a name's parts are its
ids; the only way two (namespace, ids) combinations could produce one name, or a
pattern of one reach the other, is a namespace equal to a kind: ``event:event:*``
(swarm ``event``, default namespace) matches ``event:event:S:t`` (namespace
``event``). Refusing those namespaces makes naming injective (tests/test_naming.py
tries the combinations)."""


def validate_namespace(value: object) -> str:
    namespace = validate_id(value, "namespace")
    if namespace in RESERVED_NAMESPACES:
        raise InvalidIdError(
            f"namespace {namespace!r} is reserved: it is the first part of the default "
            f"namespace's channel and key names ({', '.join(sorted(RESERVED_NAMESPACES))}), "
            f"so its channels would reach default-namespace subscribers; choose another, "
            f"e.g. {namespace + '-ns'!r}"
        )
    return namespace


def validate_type_pattern(value: object) -> str:
    """A subscription pattern relative to a swarm: an event type where ``*`` is a wildcard.

    ``agent.*`` and ``*`` are allowed; ``?``, ``[``, ``]``, ``\\`` and ``:`` are not, so
    a pattern can never reach outside its swarm.
    """
    if not isinstance(value, str):
        raise InvalidIdError(f"pattern must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdError("pattern is empty; use an event type, or '*' for every type")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"pattern is {len(value)} characters; at most {MAX_ID_LENGTH}")
    if not _PATTERN_RE.match(value):
        raise InvalidIdError(
            f"pattern {value!r} contains {_describe_bad(value, '*')}; patterns may use "
            f"{ALLOWED_ID}, and '*' as a wildcard"
        )
    return value


def type_matches(pattern: str, event_type: str) -> bool:
    """True when ``event_type`` matches a validated pattern (``*`` = any run of characters)."""
    if pattern == "*":
        return True
    if "*" not in pattern:
        return pattern == event_type
    parts = pattern.split("*")
    if not event_type.startswith(parts[0]) or not event_type.endswith(parts[-1]):
        return False
    pos = len(parts[0])
    end = len(event_type) - len(parts[-1])
    for part in parts[1:-1]:
        idx = event_type.find(part, pos, end)
        if idx < 0:
            return False
        pos = idx + len(part)
    return pos <= end
