"""Everything that measures: one package, one part per concern.

* ``results`` — the ``pytest-cfn/result`` JSON every measuring front end writes (the plugin,
  the Locust harness, both benchmark commands), its regression rule and ``format_value``;
* ``targets`` — ADR-002's targets (the default gates) and its in-process claims;
* ``metrics`` — latency histograms, server-side sampling, the machine a figure came from;
* ``worker_processes`` — spawned, time-bounded worker processes and raw-socket helpers that
  both benchmark commands run their steps in;
* ``embedded_server`` — the real ``redis-server`` a benchmark command starts (or the URL it is
  given), with what the header and the JSON say about it;
* ``microbench`` — ``python -m pytest_cfn.measure.microbench``: the Event Bus and Messenger
  micro-benchmark, our bus against redis-py and ``redis-benchmark`` in the same run;
* ``sweep`` — ``cfn bench``: the agent sweep (the Locust harness at 10..500 agents, repeated),
  its reference measurements, its result document and summary page (``cfn report``);
* ``calibration`` — ``cfn calibrate``: the harness measured through a delay proxy that
  injects a known delay and a known loss;
* ``drawing`` — the sweep's figures (matplotlib, Agg);
* ``cluster`` — ``python -m pytest_cfn.measure.cluster.faults``, ``...cluster.messenger_faults``
  and ``...cluster.shard_ceiling``: the Event Bus and the Messenger on a local Redis Cluster
  under faults, and what one shard carries;
* ``loadgen`` — the load harness's Locust-free logic: options, pacing, delivery taps and
  accounting, verdicts, the report (its locustfile is ``loadtests/swarm.py``).

Nothing here imports locust.
"""
