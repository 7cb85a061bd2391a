"""``python -m pytest_cfn.measure.microbench``: the command line, the server, the header and
the JSON.

Exit status: 0 when every step produced its figure (whether or not a target was
met: the verdicts are in the output and the JSON), 1 when a step failed to run,
2 for a usage error or a server that cannot be reached or started.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TextIO

import redis

from pytest_cfn._backends.address import URL_FORMS, parse_redis_url
from pytest_cfn._errors import CfnError
from pytest_cfn.measure.embedded_server import measured_server, server_facts
from pytest_cfn.measure.metrics.machine import machine_info
from pytest_cfn.measure.microbench.config import (
    MESSAGE_BYTES,
    STEPS,
    WINDOW_BYTES,
    BenchConfig,
    Target,
)
from pytest_cfn.measure.microbench.printout import build_result, print_summary
from pytest_cfn.measure.microbench.runner import BenchRun
from pytest_cfn.measure.microbench.shard_references import (
    cluster_masters_count,
    server_is_cluster,
)
from pytest_cfn.measure.microbench.workloads import wire_size
from pytest_cfn.measure.results import RedisInfo, redact_url, write_result

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_USAGE = 2
FULL = {"events": 200_000, "rate": 10_000.0, "duration": 5.0, "repeat": 3, "idle_buses": 50,
        "min_latency_events": 20_000}
QUICK = {"events": 2_000, "rate": 2_000.0, "duration": 0.5, "repeat": 1, "idle_buses": 3,
         "min_latency_events": 0}
FULL_ALSO_RATES = (1_000.0, 20_000.0)
QUICK_ALSO_RATES = (1_000.0,)
MAX_PAYLOAD = 256 * 1024
MIN_MESSAGE = 32


def _number(
    kind: Callable[[str], float], low: float, high: float, what: str
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {what}")
        return value

    return parse


def _rates(text: str) -> tuple[float, ...]:
    parse = _number(float, 1, 1_000_000, "events/s, 1..1e6")
    if text.strip().lower() == "none":
        return ()
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of rates (e.g. 1000,20000) or 'none'"
        )
    return tuple(parse(part) for part in parts)


def _redis_url(text: str) -> str:
    try:
        parse_redis_url(text)
    except CfnError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_cfn.measure.microbench",
        description=(
            "Measure the Event Bus and the Messenger against one real Redis server, in one "
            "run: redis-benchmark's PUBLISH ceiling, redis-py's PubSub drain and pipeline rates "
            "(references), our publish rate, our end-to-end delivered events/s and CPU per "
            "event (batch() and a plain auto-pipelined publish() loop), latency at fixed "
            "offered rates from the intended send time (--explain: per stage), each for the "
            "sync and the asyncio front end, memory per idle bus, and the "
            "Messenger's delivered messages/s (5 KB) beside the Event Bus's events/s, "
            "receiver-paced. Each figure is printed with its method, its ratio to its "
            "reference and its target. Given a Redis Cluster node, our bus and every "
            "reference use sharded pub/sub (SPUBLISH / SSUBSCRIBE of the swarm's shard "
            "channel on the master that owns its slot), and the figures say so."
        ),
        epilog=(
            "Full defaults: --events 200000 --rate 10000 --also-rates 1000,20000 --duration 5 "
            "(and at least 20,000 events per rate: 20 s at 1,000/s) --repeat 3 --idle-buses 50; "
            "--quick: --events 2000 --rate 2000 --also-rates 1000 "
            "--duration 0.5 --repeat 1 --idle-buses 3 (explicit flags win). Exit status: 0 all "
            "figures measured, 1 a step failed to run, 2 usage error or no server."
        ),
    )
    parser.add_argument(
        "--redis", metavar="URL", type=_redis_url, default=None,
        help=f"server to measure ({URL_FORMS}); default: start an embedded redis-server "
        "on a free loopback port and stop it at the end",
    )
    parser.add_argument(
        "--tls", action="store_true",
        help="start the embedded redis-server with a TLS port as well (certificates made at "
        "start with trustme, verified) and measure through TLS; the tls step compares the "
        "end-to-end pair over TLS with the same server's plain port (CPU per event)",
    )
    parser.add_argument(
        "--plain-redis", metavar="URL", type=_redis_url, default=None,
        help="with --redis rediss://...: the same server's plain-text URL, the reference of "
        "the tls step (without it the tls step prints the TLS figures alone)",
    )
    parser.add_argument(
        "--events", metavar="N", type=_number(int, 100, 100_000_000, "an integer 100..1e8"),
        help="events per throughput run (drain, pipeline, publish, end to end, and each "
        "layer of the messenger step; default 200000)",
    )
    parser.add_argument(
        "--rate", metavar="R", type=_number(float, 1, 1_000_000, "events/s, 1..1e6"),
        help="offered rate of the latency run, events/s (default 10000)",
    )
    parser.add_argument(
        "--also-rates", metavar="R,R", type=_rates, default=None,
        help="more offered rates for the latency step, after --rate (comma-separated "
        "events/s, or 'none'; default 1000,20000, --quick: 1000)",
    )
    parser.add_argument(
        "--explain", action="store_true",
        help="latency step: note per-stage timestamps of every event (publish call, write "
        "returned, socket read, decoded, handler) and print, under each of our latency "
        "figures, each stage's percentiles and its mean among the p99 and p99.9 tails, "
        "naming the stage that owns the tail",
    )
    parser.add_argument(
        "--duration", metavar="S", type=_number(float, 0.1, 3600, "seconds, 0.1..3600"),
        help="seconds recorded per offered rate in the latency step, after a short warm-up "
        "(default 5, and longer at a low rate to record at least 20,000 events, so a p99.9 "
        "rests on 20 of them: 20 s at 1,000/s; a --duration given is taken as it is)",
    )
    parser.add_argument(
        "--payload", metavar="BYTES", type=_number(int, 1, MAX_PAYLOAD, f"bytes, 1..{MAX_PAYLOAD}"),
        default=200,
        help="event data size in bytes (default 200); redis-py and redis-benchmark publish "
        "payloads of this size, our events carry data of this size (at least 32 B) in "
        "their envelope",
    )
    parser.add_argument(
        "--message-bytes", metavar="BYTES",
        type=_number(int, MIN_MESSAGE, MAX_PAYLOAD, f"bytes, {MIN_MESSAGE}..{MAX_PAYLOAD}"),
        default=MESSAGE_BYTES,
        help=f"Messenger message data size in the messenger step (default {MESSAGE_BYTES})",
    )
    parser.add_argument(
        "--window-mb", metavar="MIB", type=_number(float, 0.1, 1024, "MiB, 0.1..1024"),
        default=WINDOW_BYTES / 2**20,
        help="messenger step: how far (MiB on the wire) the sender may run ahead of the "
        f"receiver (default {WINDOW_BYTES / 2**20:g}; the server cuts a subscriber off at "
        "its pub/sub output-buffer limit, 32 MB by default)",
    )
    parser.add_argument(
        "--repeat", metavar="K", type=_number(int, 1, 20, "an integer 1..20"),
        help="rounds of the throughput and messenger steps; the median is reported "
        "(default 3)",
    )
    parser.add_argument(
        "--idle-buses", metavar="N", type=_number(int, 1, 1000, "an integer 1..1000"),
        help="idle buses opened to measure memory per bus (default 50)",
    )
    parser.add_argument(
        "--json", metavar="PATH", type=Path, default=None,
        help="also write a pytest-cfn/result JSON file with every figure as a Metric",
    )
    parser.add_argument(
        "--only", metavar="STEP", action="append", choices=STEPS,
        help=f"run only this step (repeatable; one of {', '.join(STEPS)}); default: all",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="small counts (a few seconds in all), for tests and smoke runs",
    )
    return parser


def parse_config(argv: Sequence[str] | None = None) -> BenchConfig:
    """The run's settings; a bad argument exits with status 2 and a usage message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    if args.tls and args.redis is not None:
        parser.error("--tls starts an embedded server with a TLS port; leave out --redis, "
                     "or pass --redis rediss://... for a TLS server of your own")
    redis_tls = args.redis is not None and parse_redis_url(args.redis).tls is not None
    if args.plain_redis is not None and not redis_tls:
        parser.error("--plain-redis is the plain-text reference of a --redis rediss://... "
                     "server; it needs --redis rediss://...")
    tls_in_use = bool(args.tls or redis_tls)
    config = BenchConfig(
        redis_url=args.redis,
        events=int(args.events if args.events is not None else defaults["events"]),
        rate=float(args.rate if args.rate is not None else defaults["rate"]),
        duration=float(args.duration if args.duration is not None else defaults["duration"]),
        payload=int(args.payload),
        repeat=int(args.repeat if args.repeat is not None else defaults["repeat"]),
        idle_buses=int(
            args.idle_buses if args.idle_buses is not None else defaults["idle_buses"]
        ),
        json_path=args.json,
        quick=bool(args.quick),
        steps=tuple(
            step for step in STEPS
            if (step in args.only if args.only else step != "tls" or tls_in_use)
        ),
        message_bytes=int(args.message_bytes),
        window_bytes=int(args.window_mb * 2**20),
        tls=bool(args.tls),
        plain_redis_url=args.plain_redis,
        also_rates=(
            args.also_rates if args.also_rates is not None
            else QUICK_ALSO_RATES if args.quick else FULL_ALSO_RATES
        ),
        explain=bool(args.explain),
        min_latency_events=0 if args.duration is not None else int(
            defaults["min_latency_events"]),
    )
    if config.rate * config.duration < 1:
        parser.error(
            f"--rate {config.rate:g} for --duration {config.duration:g} s schedules no event; "
            "rate x duration must be at least 1"
        )
    return config


def _clients() -> str:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (
        f"redis-py {version('redis')} + hiredis {version('hiredis')} (RESP2), "
        f"msgspec {version('msgspec')}, pytest-cfn {version('pytest-cfn')}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def _print_header(stream: TextIO, config: BenchConfig, target: Target, where: str) -> None:
    machine = machine_info()
    print(f"pytest-cfn Event Bus and Messenger benchmark: Redis {target.version}, {where}",
          file=stream)
    print(f"clients: {target.clients}", file=stream)
    print(
        f"machine: {machine['cpu_usable']} CPUs usable ({machine['cpu_model']}), "
        f"load average {machine['load_average']}",
        file=stream,
    )
    print(
        f"settings: {config.events:,} events per throughput run x {config.repeat} round(s); "
        f"{config.payload} B event data ({target.wire_bytes} B JSON envelope on the wire); "
        f"latency at {', '.join(f'{r:,.0f}' for r in (config.rate, *config.also_rates))} "
        f"events/s for "
        f"{', '.join(f'{config.latency_duration(r):g}' for r in (config.rate, *config.also_rates))}"
        f" s; "
        f"{config.idle_buses} idle buses; {config.message_bytes:,} B Messenger messages, "
        f"{config.window_bytes / 2**20:g} MiB window" + ("; --quick" if config.quick else ""),
        file=stream,
    )
    stream.flush()


def run(config: BenchConfig, stream: TextIO = sys.stdout) -> int:
    with measured_server(config.redis_url, tls=config.tls,
                         plain_url=config.plain_redis_url) as server:
        url, embedded = server.url, server.embedded
        version, _ = server_facts(url)
        masters = cluster_masters_count(url) if server_is_cluster(url) else 0
        target = Target(
            url=url,
            version=version,
            redis_benchmark=server.redis_benchmark,
            clients=_clients(),
            wire_bytes=wire_size("cfnbench-000000-1", config.payload),
            plain_url=server.plain_url,
            cluster_masters=masters,
        )
        where = server.description
        if masters:
            where += (f", a Redis Cluster node ({masters} masters): sharded pub/sub, every "
                      "reference on the master of its channel's slot, as our bus")
        _print_header(stream, config, target, where)
        bench = BenchRun(config, target, stream)
        bench.run()
    print_summary(stream, bench.figures, bench.failures)
    if config.json_path is not None:
        result = build_result(
            bench.figures,
            bench.failures,
            redis=RedisInfo(version=version, embedded=embedded, url=redact_url(url)),
            machine=machine_info(),
            steps=bench.steps,
            extra={
                "clients": target.clients,
                "wire_bytes": target.wire_bytes,
                "settings": {
                    "events": config.events, "rate": config.rate, "duration": config.duration,
                    "min_latency_events": config.min_latency_events,
                    "payload": config.payload, "repeat": config.repeat,
                    "idle_buses": config.idle_buses, "quick": config.quick,
                    "steps": list(config.steps), "message_bytes": config.message_bytes,
                    "window_bytes": config.window_bytes, "tls": config.tls,
                    "also_rates": list(config.also_rates), "explain": config.explain,
                },
            },
        )
        path = write_result(config.json_path, result)
        print(f"\nwrote {path}", file=stream)
    failed = [failure for failure in bench.failures if not failure.skipped]
    return EXIT_STEP_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    try:
        return run(config)
    except CfnError as exc:
        print(f"pytest_cfn.measure.microbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConnectionError, OSError, TimeoutError, redis.RedisError) as exc:
        from pytest_cfn.tls_probe import tls_problem

        problem = tls_problem(config.redis_url) if config.redis_url else None
        print(f"pytest_cfn.measure.microbench: error: {problem or f'cannot reach Redis: {exc}'}",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
