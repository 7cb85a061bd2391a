"""Blocking transports, generated from ``pytest_cfn._async``."""
