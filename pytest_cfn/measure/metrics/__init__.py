"""Measurement: latency histograms, server-side sampling and the machine a figure came from."""

from __future__ import annotations

from pytest_cfn.measure.metrics.latency import LatencyHistogram, LatencyPercentiles
from pytest_cfn.measure.metrics.machine import machine_info
from pytest_cfn.measure.metrics.server_sampler import (
    ServerSample,
    ServerSampler,
    ServerSummary,
    numsub,
    sample_server,
)

__all__ = [
    "LatencyHistogram",
    "LatencyPercentiles",
    "ServerSample",
    "ServerSampler",
    "ServerSummary",
    "machine_info",
    "numsub",
    "sample_server",
]
