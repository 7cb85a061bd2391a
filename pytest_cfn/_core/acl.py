"""The Redis ACL rules one swarm's agents need, derived from the names the library uses.

Since Redis 7 a new user has no channel rights (``acl-pubsub-default
resetchannels``), and a PSUBSCRIBE pattern must literally match an allowed one.
What an agent of swarm ``S`` touches (with ``ns:`` in front of every name when a
namespace is set):

- channels: ``event:S:*`` (publish, and the one pattern its Event Bus subscribes),
  ``message:S:*`` (Messenger messages it sends to any swarm) and ``message:*:S``
  (the Messenger's inbox pattern);
- keys: ``critical:S`` (the stream of priority 8-9 events: XADD + EXPIRE inside the
  publishing script, XRANGE for catch-up), ``critical-cursor:S:AGENT`` (GET/SET of
  each subscriber's position; ``S:*`` without ``--agent``), ``history:*`` (its own
  stored Messenger history, and ``persist_history=True`` pushes to the recipient's
  list inside a script, whose declared key Redis checks for read and write: so the
  user can read other swarms' history lists too), ``swarm:S`` and
  ``swarm-checkpoints:S`` (SwarmState), read-only ``route:*`` (``route_overrides``);
- commands: the ones below, including those the scripts call (Redis checks them).

On Redis Cluster (``cluster=True``; apply the line on every node, ACLs are per node):
the shard channels ``event:{S}`` and ``message:{S}`` (its inbox), ``message:{*}`` (the
inboxes it sends to: sharded pub/sub puts the recipient, not the sender, in the
channel, so the rule also lets it read other inboxes — sign envelopes where that
matters), the hash-tagged keys, SPUBLISH / SSUBSCRIBE, ASKING, and what topology
discovery sends (INFO, CLUSTER SLOTS, COMMAND).

Not granted, on purpose: other swarms' streams, cursors and state. A route override
that sends an event type to another swarm, and ``SwarmState.swarms()`` /
``interrupted()`` over every swarm, need an operator's user.
"""

from __future__ import annotations

import re

from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.critical_log import cursor_key, stream_key
from pytest_cfn._core.ids import validate_agent_id, validate_id, validate_swarm_id
from pytest_cfn._core.message import history_key
from pytest_cfn._core.shard_layout import ShardChannelNames
from pytest_cfn._core.swarm_state import ShardStateKeys, StateKeys
from pytest_cfn._errors import InvalidOptionError

COMMANDS = (
    # connection: the handshake names every connection; PING is the subscriber's watchdog
    "ping", "client|setname", "select", "time",
    # pub/sub
    "publish", "psubscribe", "punsubscribe",
    # scripts (critical stream + publish, history + publish, heartbeat, recovery claim)
    "eval",
    # critical stream and catch-up cursor
    "xadd", "xrange", "expire", "get", "set",
    # Messenger history
    "lpush", "ltrim", "lrange",
    # SwarmState
    "hset", "hsetnx", "hget", "hgetall", "exists", "ttl", "del",
)
CLUSTER_COMMANDS = (
    # detection (INFO cluster) and redis-py's topology discovery
    "info", "cluster|slots", "command",
    # sharded pub/sub, and a script sent on after an ASK reply
    "spublish", "ssubscribe", "sunsubscribe", "asking",
)
_PASSWORD = re.compile(r"[A-Za-z0-9._~+/=-]{8,256}")


def acl_rules(swarm: str, agent: str | None = None, namespace: str = "",
              cluster: bool = False) -> list[str]:
    """The ACL rules (after ``reset on >password``) of one swarm's agents (``cluster``: on
    Redis Cluster, with its shard channels and hash-tagged keys)."""
    swarm = validate_swarm_id(swarm)
    channels = ShardChannelNames(namespace) if cluster else ChannelNames(namespace)
    cursor = (
        cursor_key(channels, swarm, validate_agent_id(agent))
        if agent is not None
        else channels.key("critical-cursor", swarm, "*")
    )
    state = ShardStateKeys(channels) if cluster else StateKeys(channels)
    sends = channels.message(swarm, "*")  # cluster: message:{*}, every recipient's inbox
    return [
        "resetchannels",
        "resetkeys",
        "-@all",
        *(f"+{command}" for command in COMMANDS + (CLUSTER_COMMANDS if cluster else ())),
        f"&{channels.event_pattern(swarm)}",
        f"&{sends}",
        f"&{channels.inbox_pattern(swarm)}",
        f"~{stream_key(channels, swarm)}",
        f"~{cursor}",
        f"~{history_key(channels, '*')}",
        f"~{state.state(swarm)}",
        f"~{state.checkpoints(swarm)}",
        f"%R~{channels.key('route', '*')}",
    ]


def acl_setuser(user: str, password: str, swarm: str, agent: str | None = None,
                namespace: str = "", cluster: bool = False) -> str:
    """``ACL SETUSER user reset on >password <rules>``: one line for redis-cli or a client."""
    rules = acl_rules(swarm, agent, namespace, cluster)
    name = validate_id(user, "ACL user name")
    if not _PASSWORD.fullmatch(password):
        raise InvalidOptionError(
            "the password must be 8-256 characters of letters, digits and ._~+/=-"
        )
    return " ".join(["ACL", "SETUSER", name, "reset", "on", f">{password}", *rules])

