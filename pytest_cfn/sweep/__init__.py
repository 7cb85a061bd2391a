"""``cfn bench``: the agent sweep against ADR-002 (issue 6), and ``cfn report``.

The Locust harness (``loadtests/swarm.py``) runs in subprocesses at each agent count
(``harness``); the server's ceiling and floor (``references``), the route cache sweep
(``cache_sweep``) and the connection layouts (``client_models``) are measured in the same run
(``runner``); the document (``document``) feeds the figures (``figures``) and the summary page
(``summary``, with ADR-002's figures beside ours from ``adr``), for ``cfn bench`` and
``cfn report`` alike.
"""

from __future__ import annotations

from pytest_cfn.sweep.document import SweepData, build_result
from pytest_cfn.sweep.runner import SweepConfig, SweepOutcome, SweepRun
from pytest_cfn.sweep.summary import write_report

__all__ = ["SweepConfig", "SweepData", "SweepOutcome", "SweepRun", "build_result", "write_report"]
