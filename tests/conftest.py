"""Shared fixtures. Anything touching Redis runs against a real redis-server we start ourselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_cfn.server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server per session (per xdist worker), stopped at the end."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server."""
    return redis_server.url


@pytest.fixture
def fresh_redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that restart, pause or kill it."""
    with RedisServer() as server:
        yield server
