"""Measurements on a local Redis Cluster: the Event Bus under faults (``faults``) and what one
shard carries (``shard_ceiling``); each is a command, ``python -m pytest_cfn.measure.cluster.X``.
"""
