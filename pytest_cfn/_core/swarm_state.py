"""Swarm state in Redis: key names, the record, (de)serialisation and the recovery rules.

A swarm's state is a hash under ``swarm:{id}`` (readable with ``redis-cli
hgetall``): ``status``, ``loop``, ``phase``, ``heartbeat``, ``created``,
``updated``, ``data`` (JSON), one ``agent:{id}`` field per agent, and the
recovery count. Every write refreshes the TTL (3600 s by default, as ADR-002
says) and the heartbeat. Checkpoints are whole records, newest first, in the
list ``swarm-checkpoints:{id}`` (outside the ``swarm:*`` pattern that recovery
scans). Times are wall-clock seconds (``time.time()``) passed in by the caller.

A swarm is *interrupted* when its status is not terminal and its heartbeat is
older than a settable age. Claiming it for recovery is one server-side script,
so two recoverers cannot both take the same swarm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.ids import validate_agent_id, validate_id, validate_swarm_id
from pytest_cfn._errors import InvalidOptionError

TERMINAL_STATUSES = ("finished", "failed", "cancelled")
RECOVERING = "recovering"
RUNNING = "running"
DEFAULT_TTL = 3600.0
DEFAULT_MAX_AGE = 30.0
DEFAULT_CHECKPOINTS = 10
MAX_PHASE_LENGTH = 200
_AGENT_PREFIX = "agent:"

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode

HEARTBEAT_SCRIPT = """\
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'heartbeat', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_TERMINAL_LUA = " or ".join(f"status == '{s}'" for s in TERMINAL_STATUSES)
CLAIM_SCRIPT = f"""\
if redis.call('EXISTS', KEYS[1]) == 0 then
  if #ARGV <= 4 then return 0 end
  for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
else
  local status = redis.call('HGET', KEYS[1], 'status')
  if {_TERMINAL_LUA} then return -1 end
  local max_age = tonumber(ARGV[2])
  if max_age >= 0 then
    local beat = tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0') or 0
    if tonumber(ARGV[1]) - beat < max_age then return -2 end
  end
end
redis.call('HSET', KEYS[1], 'status', '{RECOVERING}', 'heartbeat', ARGV[1], 'updated', ARGV[1],
           'recovered_by', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'recoveries', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
CLAIMED, NOT_FOUND, TERMINAL, ALIVE = 1, 0, -1, -2


class SwarmRecord(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One swarm's state as read from Redis (or from a checkpoint)."""

    swarm: str
    status: str = RUNNING
    loop: int | None = None
    phase: str | None = None
    agents: dict[str, str] = msgspec.field(default_factory=dict)
    heartbeat: float | None = None
    created: float | None = None
    updated: float | None = None
    recoveries: int = 0
    recovered_by: str | None = None
    data: Any = None
    checkpointed: float | None = None
    ttl: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def heartbeat_age(self, now: float) -> float | None:
        """Seconds since the last heartbeat, or None if it never beat."""
        return None if self.heartbeat is None else max(0.0, now - self.heartbeat)

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RecoveredSwarm:
    """A swarm claimed for recovery: resume from ``state`` (now marked recovering), or fall
    back to one of ``checkpoints`` (newest first)."""

    swarm: str
    state: SwarmRecord
    source: Literal["state", "checkpoint"]
    checkpoints: list[SwarmRecord] = field(default_factory=list)


class StateKeys:
    """Key names of the state, inside the namespace."""

    __slots__ = ("_channels",)

    def __init__(self, channels: ChannelNames) -> None:
        self._channels = channels

    def state(self, swarm: str) -> str:
        return self._channels.key("swarm", swarm)

    def checkpoints(self, swarm: str) -> str:
        return self._channels.key("swarm-checkpoints", swarm)

    def scan_pattern(self) -> str:
        return self._channels.key_pattern("swarm", "*")

    def swarm_of(self, key: bytes | str) -> str | None:
        """The swarm id of a ``swarm:{id}`` key found by SCAN, or None for anything else."""
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        head = self._channels.key("swarm", "")
        if not text.startswith(head):
            return None
        try:
            return validate_swarm_id(text[len(head) :])
        except ValueError:
            return None


class ShardStateKeys(StateKeys):
    """On Redis Cluster: ``swarm:{id}`` and ``swarm-checkpoints:{id}`` hash-tagged into the
    swarm's slot (the one its shard channel and critical stream use)."""

    __slots__ = ()

    def state(self, swarm: str) -> str:
        return f"{self._channels.prefix}swarm:{{{swarm}}}"

    def checkpoints(self, swarm: str) -> str:
        return f"{self._channels.prefix}swarm-checkpoints:{{{swarm}}}"

    def scan_pattern(self) -> str:
        return f"{self._channels.prefix}swarm:{{*}}"

    def swarm_of(self, key: bytes | str) -> str | None:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        head = f"{self._channels.prefix}swarm:{{"
        if not text.startswith(head) or not text.endswith("}"):
            return None
        try:
            return validate_swarm_id(text[len(head) : -1])
        except ValueError:
            return None


def validate_status(status: object) -> str:
    return validate_id(status, "status")


def validate_phase(phase: object) -> str:
    if not isinstance(phase, str) or not phase or len(phase) > MAX_PHASE_LENGTH:
        raise InvalidOptionError(
            f"phase must be a non-empty string of at most {MAX_PHASE_LENGTH} characters, "
            f"got {phase!r}"
        )
    return phase


def validate_seconds(name: str, value: object, *, minimum: float = 0.0) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise InvalidOptionError(f"{name} must be a number of seconds >= {minimum}, got {value!r}")
    return float(value)


def encode_fields(
    now: float,
    *,
    status: str | None = None,
    loop: int | None = None,
    phase: str | None = None,
    agents: dict[str, str] | None = None,
    data: Any = None,
) -> list[str | bytes]:
    """Field/value pairs for ``HSET`` of the given (validated) parts; None = unchanged."""
    out: list[str | bytes] = ["heartbeat", repr(now), "updated", repr(now)]
    if status is not None:
        out += ["status", validate_status(status)]
    if loop is not None:
        if isinstance(loop, bool) or not isinstance(loop, int) or loop < 0:
            raise InvalidOptionError(f"loop must be an integer >= 0, got {loop!r}")
        out += ["loop", str(loop)]
    if phase is not None:
        out += ["phase", validate_phase(phase)]
    if agents is not None:
        if not isinstance(agents, dict):
            raise InvalidOptionError(
                f"agents must be a dict of agent id -> status, got {type(agents).__name__}"
            )
        for agent, agent_status in agents.items():
            out += [_AGENT_PREFIX + validate_agent_id(agent), validate_status(agent_status)]
    if data is not None:
        try:
            out += ["data", _json_encode(data)]
        except (TypeError, ValueError) as exc:
            raise InvalidOptionError(f"data cannot be encoded as JSON: {exc}") from exc
    return out


def record_fields(record: SwarmRecord) -> list[str | bytes]:
    """Every field of a record, for restoring it from a checkpoint."""
    out = encode_fields(
        record.updated or 0.0,
        status=record.status,
        loop=record.loop,
        phase=record.phase,
        agents=record.agents,
        data=record.data,
    )
    if record.created is not None:
        out += ["created", repr(record.created)]
    return out


def parse_hash(swarm: str, flat: list[bytes], ttl: Any = None) -> SwarmRecord | None:
    """A record from an ``HGETALL`` reply (and a ``TTL`` reply); None if the hash is gone."""
    if not flat:
        return None
    fields: dict[str, str] = {}
    agents: dict[str, str] = {}
    data: Any = None
    for i in range(0, len(flat) - 1, 2):
        name = flat[i].decode("utf-8", "replace")
        raw = flat[i + 1]
        if name == "data":
            try:
                data = _json_decode(raw)
            except Exception:  # any decode failure (RecursionError on deep nesting too)
                data = raw.decode("utf-8", "replace")
        elif name.startswith(_AGENT_PREFIX):
            agents[name[len(_AGENT_PREFIX) :]] = raw.decode("utf-8", "replace")
        else:
            fields[name] = raw.decode("utf-8", "replace")
    remaining = float(ttl) if isinstance(ttl, int) and ttl >= 0 else None
    return SwarmRecord(
        swarm=swarm,
        status=fields.get("status", RUNNING),
        loop=_int(fields.get("loop")),
        phase=fields.get("phase"),
        agents=agents,
        heartbeat=_float(fields.get("heartbeat")),
        created=_float(fields.get("created")),
        updated=_float(fields.get("updated")),
        recoveries=_int(fields.get("recoveries")) or 0,
        recovered_by=fields.get("recovered_by") or None,
        data=data,
        ttl=remaining,
    )


def encode_checkpoint(record: SwarmRecord, now: float) -> bytes:
    return _json_encode(msgspec.structs.replace(record, checkpointed=now, ttl=None))


def decode_checkpoints(entries: list[bytes]) -> list[SwarmRecord]:
    """Checkpoints from an ``LRANGE`` (newest first); undecodable ones are left out."""
    out: list[SwarmRecord] = []
    for raw in entries:
        try:
            out.append(msgspec.json.decode(raw, type=SwarmRecord))
        except Exception:  # any decode failure (RecursionError on deep nesting too)
            continue
    return out


def is_interrupted(record: SwarmRecord, now: float, max_age: float) -> bool:
    """Not finished, and no heartbeat for at least ``max_age`` seconds."""
    if record.finished:
        return False
    age = record.heartbeat_age(now)
    return age is None or age >= max_age


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None
