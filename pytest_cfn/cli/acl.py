r"""``cfn acl``: the ``ACL SETUSER`` line that lets one swarm's agents work, and nothing more.

    cfn acl --swarm S                          # any agent of swarm S
    cfn acl --swarm S --agent A --namespace NS # agent A only (its catch-up cursor)
    cfn acl --swarm S --user bot --password "$PW" | redis-cli -x   # or paste it

Grants swarm S's channels (event:S:*, message:S:*, message:*:S), its critical
stream and catch-up cursors, its swarm state, the Messenger history lists
(persist_history writes to the recipient's), read-only route:* keys, and exactly
the commands the library sends (including those its scripts call). Without --password
a random one is generated (it is part of the printed line). Connect with
redis://USER:PASSWORD@host:port/db.

    cfn acl --swarm S --cluster                # Redis Cluster: run the line on every node

With --cluster the rules name the shard channels (event:{S}, message:{S}, and
message:{*} for the inboxes it sends to, which also lets it read them: sign
envelopes where that matters), the hash-tagged keys, SPUBLISH/SSUBSCRIBE, ASKING
and the commands of topology discovery. ACLs are per node on a cluster.
"""

from __future__ import annotations

import argparse
import secrets
from typing import Any

from pytest_cfn._core.acl import acl_setuser
from pytest_cfn.cli._swarm_args import add_namespace


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "acl",
        help="print the ACL SETUSER line one swarm's agents need",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--swarm", required=True, help="the swarm whose agents use the user")
    parser.add_argument(
        "--agent", help="restrict the catch-up cursor key to this agent (default: any agent)"
    )
    parser.add_argument("--user", help="ACL user name (default: cfn-SWARM or cfn-SWARM-AGENT)")
    parser.add_argument(
        "--password", help="the user's password, 8-256 of A-Z a-z 0-9 ._~+/=- (default: random)"
    )
    parser.add_argument(
        "--cluster", action="store_true",
        help="rules for Redis Cluster (shard channels, hash-tagged keys); apply on every node",
    )
    add_namespace(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    user = args.user or "-".join(p for p in ("cfn", args.swarm, args.agent) if p)
    password = args.password if args.password is not None else secrets.token_urlsafe(24)
    print(acl_setuser(user, password, args.swarm, args.agent, args.namespace, args.cluster))
    return 0
