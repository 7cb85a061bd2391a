"""The agent sweep (``cfn bench``), its calibration (``cfn calibrate``) and its report
(``cfn report``).

The Locust harness (``loadtests/swarm.py``) runs in subprocesses at each agent count, each
load point repeated (``harness``); the server's ceiling and floor (``references``), the route
cache sweep (``cache_sweep``), the connection layouts (``client_models``) and the instrument's
calibration through a delay proxy (``calibration``, ``delay_proxy``) are measured in the same
run (``runner``); the document (``document``) feeds the figures (``figures``,
``reference_figures``, sharing ``figure_style``) and the summary page (``summary``, with
ADR-002's figures beside ours from ``adr``), for ``cfn bench`` and ``cfn report`` alike.
Not the Event Bus micro-benchmark: that is ``python -m pytest_cfn.bench``.
"""

from __future__ import annotations

from pytest_cfn.sweep.document import SweepData, build_result
from pytest_cfn.sweep.runner import SweepConfig, SweepOutcome, SweepRun
from pytest_cfn.sweep.summary import write_report

__all__ = ["SweepConfig", "SweepData", "SweepOutcome", "SweepRun", "build_result", "write_report"]
