"""IO backends: the only place that knows about sockets, threads and asyncio.

``async_backend`` serves the hand-written ``pytest_cfn._async`` code;
``sync_backend`` has the same names without ``async`` and serves the generated
``pytest_cfn._sync`` code (see ``scripts/unasync.py``).
"""
