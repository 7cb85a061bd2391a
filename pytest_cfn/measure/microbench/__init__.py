"""The Event Bus and Messenger micro-benchmark, ``python -m pytest_cfn.measure.microbench``.

Against one real Redis server in one run it prints redis-benchmark's PUBLISH
ceiling, redis-py's PubSub drain and pipeline rates as references, our publish
rate, our end-to-end delivered events/s, latency at a fixed offered rate from
the intended send time, memory per idle bus, and the Messenger's delivered
messages/s beside the Event Bus's events/s (``--only messenger``), each with its
method, its ratio to its reference and its target. ``cfn bench`` is the agent
sweep, not this.
"""

from __future__ import annotations

from pytest_cfn.measure.microbench.command import build_parser, main, parse_config, run
from pytest_cfn.measure.microbench.config import BenchConfig, Target

__all__ = ["BenchConfig", "Target", "build_parser", "main", "parse_config", "run"]
