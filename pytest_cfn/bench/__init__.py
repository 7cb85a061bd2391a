"""The old name of the Event Bus micro-benchmark, kept so ``python -m pytest_cfn.bench`` still
runs it: it lives in :mod:`pytest_cfn.measure.microbench` (``cfn bench`` is the agent sweep)."""
