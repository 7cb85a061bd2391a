"""The pytest plugin's machinery; ``pytest_cfn.plugin`` holds only the hooks.

One concern a module: ``settings`` (options), ``endpoint`` (the run's Redis),
``shared_server`` (one embedded server for all xdist workers), ``session`` (state in
``config.stash``), ``namespaces``, ``fixtures``, ``swarm`` (``cfn_swarm``),
``perf_recorder`` / ``perf_sample`` / ``workload`` (``cfn_perf``), ``summary`` (table,
gate, baseline, JSON).
"""
