"""Locust glue of the CFN load harness (imports locust; never import it from pytest).

The logic that needs no Locust lives in ``pytest_cfn.measure.loadgen`` and is unit-tested there.
"""
