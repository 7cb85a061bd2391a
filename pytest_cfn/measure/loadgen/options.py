"""The load harness's settings: one parse function per command-line value, and the settings object.

Locust ships a master's parsed options to its workers as plain data, so every ``parse_*``
function checks its text and returns plain data (str, int, float, list); ``HarnessOptions``
turns those into the structures the harness uses. A bad value raises
:class:`InvalidOptionError` with a message that says what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn._core.ids import validate_event_type, validate_namespace
from pytest_cfn._errors import InvalidIdError, InvalidOptionError
from pytest_cfn.measure.targets import Targets

MODELS = ("per-agent", "shared")
PHASES = ("swarm", "agent")
GATES = ("throughput", "p99", "critical-loss", "cache-hit-rate", "connections", "maxclients")
DEFAULT_AGENTS_PER_SWARM = 10
MAX_PAYLOAD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class MixEntry:
    """One kind of traffic: an event type, its priority, its share, and whether it is a message."""

    type: str
    priority: int
    weight: int
    message: bool = False


def parse_redis(text: str) -> str:
    """A ``redis://`` or ``unix://`` URL (checked, returned as given)."""
    parse_redis_url(text)
    return text


def parse_positive_float(text: str, what: str = "value") -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidOptionError(f"{what} must be a number > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise InvalidOptionError(f"{what} must be a number > 0, got {text!r}")
    return value


def parse_rate(text: str) -> float:
    """Events per second per agent (or in total), a number > 0 and at most 100,000."""
    value = parse_positive_float(text, "rate (events/s)")
    if value > 100_000:
        raise InvalidOptionError(f"rate {value:g} events/s is above the limit of 100,000")
    return value


def parse_seconds(text: str) -> float:
    """A duration in seconds, >= 0."""
    problem = f"duration must be a number of seconds >= 0, got {text!r}"
    try:
        value = float(text)
    except ValueError:
        raise InvalidOptionError(problem) from None
    if not (value >= 0 and math.isfinite(value)):
        raise InvalidOptionError(problem)
    return value


def parse_window(text: str) -> float:
    """The measurement window's length, seconds > 0 (``--cfn-window``)."""
    value = parse_seconds(text)
    if value <= 0:
        raise InvalidOptionError(f"the window must be longer than 0 s, got {text!r}")
    return value


def parse_swarms(text: str) -> int:
    """Number of swarms the agents are spread over; 0 means one per 10 agents."""
    try:
        value = int(text)
    except ValueError:
        raise InvalidOptionError(
            f"swarms must be a whole number >= 0 (0 = one swarm per {DEFAULT_AGENTS_PER_SWARM} "
            f"agents), got {text!r}"
        ) from None
    if value < 0 or value > 10_000:
        raise InvalidOptionError(f"swarms must be between 0 and 10,000, got {value}")
    return value


def parse_payload(text: str) -> int:
    """Approximate size of one encoded event in bytes (envelope included)."""
    try:
        value = int(text)
    except ValueError:
        raise InvalidOptionError(f"payload must be a whole number of bytes, got {text!r}") from None
    if not 0 <= value <= MAX_PAYLOAD_BYTES:
        raise InvalidOptionError(
            f"payload must be between 0 and {MAX_PAYLOAD_BYTES} bytes, got {value}"
        )
    return value


def parse_model(text: str) -> str:
    """``per-agent`` (each agent holds its own connections, as ADR-002 counts) or ``shared``."""
    if text not in MODELS:
        raise InvalidOptionError(
            f"connection model {text!r} is not known; use one of: {', '.join(MODELS)}"
        )
    return text


def parse_phase(text: str) -> str:
    """``swarm`` (the agents of a swarm share a phase of the send interval) or ``agent``."""
    if text not in PHASES:
        raise InvalidOptionError(
            f"phase {text!r} is not known; use one of: {', '.join(PHASES)}"
        )
    return text


def parse_mix(text: str) -> str:
    """``TYPE=WEIGHT@PRIORITY,...`` (``@PRIORITY`` optional, default 5); returned normalised."""
    return ",".join(f"{e.type}={e.weight}@{e.priority}" for e in mix_entries(text))


def mix_entries(text: str) -> list[MixEntry]:
    """The entries of a ``--cfn-mix`` value; raises on any malformed part."""
    entries: list[MixEntry] = []
    seen: set[str] = set()
    form = "use TYPE=WEIGHT@PRIORITY,... e.g. 'state.update=6@5,task.assign=3@6'"
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, rest = part.partition("=")
        if not sep:
            raise InvalidOptionError(f"mix entry {part!r} has no '='; {form}")
        weight_text, at, priority_text = rest.partition("@")
        try:
            event_type = validate_event_type(name.strip())
        except InvalidIdError as exc:
            raise InvalidOptionError(f"mix entry {part!r}: {exc}") from None
        try:
            weight = int(weight_text)
            priority = int(priority_text) if at else 5
        except ValueError:
            raise InvalidOptionError(
                f"mix entry {part!r}: weight and priority must be whole numbers; {form}"
            ) from None
        if weight < 0:
            raise InvalidOptionError(f"mix entry {part!r}: weight must be >= 0")
        if not 1 <= priority <= 9:
            raise InvalidOptionError(
                f"mix entry {part!r}: priority {priority} is out of range; priorities are 1-9"
            )
        if event_type in seen:
            raise InvalidOptionError(f"mix names {event_type!r} twice")
        seen.add(event_type)
        entries.append(MixEntry(event_type, priority, weight))
    if not entries or not any(e.weight for e in entries):
        raise InvalidOptionError(f"mix {text!r} has no entry with a weight above 0; {form}")
    return entries


def parse_gates(text: str) -> str:
    """``all``, ``none`` or a comma-separated list of gate names; returned normalised."""
    return ",".join(sorted(gate_names(text))) or "none"


def gate_names(text: str) -> frozenset[str]:
    names = {part.strip() for part in text.split(",") if part.strip()}
    if names == {"all"}:
        return frozenset(GATES)
    if names == {"none"}:
        return frozenset()
    unknown = names - set(GATES)
    if unknown or not names:
        raise InvalidOptionError(
            f"unknown gate(s) {', '.join(sorted(unknown)) or repr(text)}; use 'all', 'none' or "
            f"a comma-separated list of: {', '.join(GATES)}"
        )
    return frozenset(names)


def parse_target(text: str) -> str:
    """``NAME=VALUE`` overriding one ADR target (see
    :class:`pytest_cfn.measure.targets.Targets`)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise InvalidOptionError(f"target {text!r} must look like NAME=VALUE, e.g. max_p99_ms=2")
    Targets().override({name.strip(): value.strip()})
    return f"{name.strip()}={value.strip()}"


def parse_namespace(text: str) -> str:
    validate_namespace(text)
    return text


@dataclass(frozen=True)
class HarnessOptions:
    """Every setting of one harness run, built from Locust's parsed options."""

    redis: str | None = None
    swarms: int = 0
    rate: float = 100.0
    total_rate: float | None = None
    payload: int = 200
    model: str = "per-agent"
    phase: str = "swarm"
    mix: tuple[MixEntry, ...] | None = None
    gates: frozenset[str] = frozenset(GATES)
    targets: Targets = field(default_factory=Targets)
    report: str | None = None
    warmup: float = 1.0
    drain: float = 3.0
    window: float | None = None
    flush_ms: float | None = None
    """``--cfn-flush-ms``; None: the default floor of ``pacing.tick_floor_ms``."""
    share_connections: bool = True
    exact_channels: bool = True
    """``--cfn-channels exact``: buses subscribe their swarm's event types and inboxes
    their sender swarm exactly (``event_types=``, ``from_swarms=``), not by pattern."""
    namespace: str = ""
    send_lag_limit_ms: float = 5.0

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> HarnessOptions:
        """From ``vars(parsed_options)``: keys ``cfn_*``; missing keys keep their defaults."""

        def get(name: str, default: Any) -> Any:
            value = values.get(f"cfn_{name}")
            return default if value is None else value

        mix_text = get("mix", "")
        target_texts: Iterable[str] = get("target", [])
        overrides = {}
        for text in target_texts:
            name, _, value = parse_target(text).partition("=")
            overrides[name] = value
        flush_ms = get("flush_ms", None)
        return cls(
            redis=values.get("cfn_redis") or None,
            swarms=int(get("swarms", 0)),
            rate=float(get("rate", 100.0)),
            total_rate=values.get("cfn_total_rate"),
            payload=int(get("payload", 200)),
            model=parse_model(get("model", "per-agent")),
            phase=parse_phase(get("phase", "swarm")),
            mix=tuple(mix_entries(mix_text)) if mix_text else None,
            gates=gate_names(get("gate", "all")),
            targets=Targets().override(overrides),
            report=values.get("cfn_report") or None,
            warmup=float(get("warmup", 1.0)),
            drain=float(get("drain", 3.0)),
            window=values.get("cfn_window"),
            flush_ms=None if flush_ms is None else float(flush_ms),
            share_connections=get("share", "process") == "process",
            exact_channels=get("channels", "exact") == "exact",
            namespace=get("namespace", "") or "",
            send_lag_limit_ms=float(get("send_lag_limit", 5.0)),
        )

    def swarm_count(self, agents: int) -> int:
        """The number of swarms for ``agents`` agents (``swarms`` or one per 10 agents)."""
        if self.swarms:
            return self.swarms
        return max(1, math.ceil(agents / DEFAULT_AGENTS_PER_SWARM))

    def agent_rate(self, agents: int) -> float:
        """Events/s each agent offers: ``rate``, or ``total_rate`` split over ``agents``."""
        if self.total_rate is not None:
            return self.total_rate / max(1, agents)
        return self.rate
