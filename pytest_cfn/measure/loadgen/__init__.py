"""The Locust harness's logic that needs no Locust: options, pacing, accounting, the gate table.

``loadtests/swarm.py`` (the locustfile) drives these; nothing here imports locust or gevent,
so pytest tests them directly.
"""

from __future__ import annotations

from pytest_cfn.measure.loadgen.accounting import DeliveryRecorder, RunTotals, merge
from pytest_cfn.measure.loadgen.options import GATES, MODELS, HarnessOptions, MixEntry
from pytest_cfn.measure.loadgen.traffic import ROLE_MIXES, MeasurementWindow, Schedule, role_mix

__all__ = [
    "GATES",
    "MODELS",
    "ROLE_MIXES",
    "DeliveryRecorder",
    "HarnessOptions",
    "MeasurementWindow",
    "MixEntry",
    "RunTotals",
    "Schedule",
    "merge",
    "role_mix",
]
