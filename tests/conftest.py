"""Shared fixtures. Anything touching Redis runs against a real redis-server we start ourselves."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
import redis
from frontends import FRONTENDS, Frontend

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


@pytest.fixture(params=FRONTENDS)
def fe(request: pytest.FixtureRequest) -> Iterator[Frontend]:
    """The sync or the asyncio front end; a test taking it runs once with each."""
    frontend = Frontend(request.param)
    yield frontend
    frontend.close()


@pytest.fixture
def ns() -> str:
    """A namespace of the test's own, so tests sharing a server never see each other."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client of the session's server, to poke at what the library did."""
    client = redis.Redis.from_url(redis_server.url, protocol=2)
    yield client
    client.close()


@pytest.fixture
def unreachable_url() -> str:
    """A loopback URL nothing listens on (a port just released by the kernel)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return f"redis://127.0.0.1:{port}/0"
