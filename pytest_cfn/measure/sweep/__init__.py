"""The agent sweep (``cfn bench``) and its report (``cfn report``).

The Locust harness (``loadtests/swarm.py``) runs in subprocesses at each agent count, each
load point repeated (``harness``); the server's ceiling and floor (``references``), the route
cache sweep (``cache_sweep``), the connection layouts (``client_models``) and the instrument's
calibration (:mod:`pytest_cfn.measure.calibration`) are measured in the same run
(``runner``); the document (``document``) feeds the figures (:mod:`pytest_cfn.measure.drawing`)
and the summary page (``summary_page``, with ADR-002's figures beside ours from ``adr``), for
``cfn bench`` and ``cfn report`` alike. Not the Event Bus micro-benchmark: that is
``python -m pytest_cfn.measure.microbench``. The package imports nothing itself: import the
module you need.
"""
