"""Hand-written asyncio transports. ``pytest_cfn._sync`` is generated from these."""
