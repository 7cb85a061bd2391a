r"""``cfn publish``: one event on a swarm's Event Bus, or one message to another swarm.

    cfn publish --swarm S --type cfn.loop.phase.start --priority 9 \
                --data '{"loop":3,"phase":"auth"}'
    cfn publish --swarm S --to T --data '{"q": 1}'

Priority 8-9 events also go to the swarm's stream of critical events, so
subscribers that missed them replay them.
"""

from __future__ import annotations

import argparse
from typing import Any

from pytest_cfn._core.ids import validate_agent_id, validate_event_type, validate_swarm_id
from pytest_cfn._core.options import BusOptions
from pytest_cfn._errors import InvalidOptionError
from pytest_cfn.cli._swarm_args import add_namespace, parse_json, parse_priority, require_url

DEFAULT_AGENT = "cfn-cli"


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "publish",
        parents=[common],
        help="publish one event (or, with --to, send one message to another swarm)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--swarm", required=True, help="the swarm that publishes (sends)")
    parser.add_argument("--type", dest="event_type", help="event type, e.g. agent.lifecycle")
    parser.add_argument("--to", metavar="SWARM", help="send a Messenger message to this swarm")
    parser.add_argument("--data", default="null", help="the payload as JSON (default: null)")
    parser.add_argument("--priority", default="5", help="1 (low) to 9 (critical); default 5")
    parser.add_argument(
        "--agent", default=DEFAULT_AGENT, help=f"the publishing agent (default {DEFAULT_AGENT})"
    )
    add_namespace(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    swarm = validate_swarm_id(args.swarm)
    agent = validate_agent_id(args.agent)
    priority = parse_priority(args.priority)
    data = parse_json(args.data, "--data")
    if args.to is None and args.event_type is None:
        raise InvalidOptionError("give --type TYPE for an event, or --to SWARM for a message")
    if args.to is not None and args.event_type is not None:
        raise InvalidOptionError("give either --type (an event) or --to (a message), not both")
    url, _ = require_url(args)
    options = BusOptions(namespace=args.namespace, retries=1, connect_timeout=3.0)
    if args.to is not None:
        from pytest_cfn._sync.messenger import Messenger

        to = validate_swarm_id(args.to)
        with Messenger(url, swarm, agent, options=options) as messenger:
            message_id = messenger.send(to, data, priority=priority)
            messenger.flush()
        print(f"sent {message_id} from {swarm} to {to} (priority {priority})")
        return 0
    from pytest_cfn._sync.event_bus import EventBus

    event_type = validate_event_type(args.event_type)
    with EventBus(url, swarm, agent, options=options) as bus:
        message_id = bus.publish(event_type, data, priority=priority)
        bus.flush()
    kept = " and kept in the critical stream" if priority >= 8 else ""
    print(f"published {message_id} as {event_type} on swarm {swarm} (priority {priority}){kept}")
    return 0

