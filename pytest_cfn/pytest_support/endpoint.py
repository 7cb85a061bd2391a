"""The Redis a test run talks to: one at a URL, an embedded redis-server, or fakeredis's TCP server.

A URL given by the user is checked at session start (a ``pytest.UsageError``, exit 4, when
nothing usable is there). The embedded server and fakeredis's server start only when the first
test asks for one (see ``session``); a missing binary then fails only the tests that need a
server, with :class:`NoServerError`. Nothing heavy is imported here until it is used.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest

from pytest_cfn.pytest_support.settings import RedisChoice

if TYPE_CHECKING:
    from pytest_cfn.measure.results import RedisInfo
    from pytest_cfn.server import ServerChoice

PING_TIMEOUT = 3.0
Backend = Literal["redis-server", "fakeredis"]
FAKEREDIS_INSTALL = "pip install 'fakeredis[lua]>=2.31.1'"
ZERO_INSTALL = (
    "or, with no binary at all, --cfn-redis=fakeredis:// (fakeredis's TCP server on loopback, "
    f"{FAKEREDIS_INSTALL}: functional tests only, figures not representative)"
)


class StoppableServer(Protocol):
    def stop(self) -> None: ...


class NoServerError(pytest.fail.Exception):  # type: ignore[misc, name-defined]
    """A test needs a Redis server and none could be started; an error of that test only."""


def _redact(url: str) -> str:
    from pytest_cfn.measure.results import redact_url

    return redact_url(url)


@dataclass(frozen=True)
class RedisEndpoint:
    """Plain facts about the run's server, small enough to travel to xdist workers."""

    url: str
    backend: Backend = "redis-server"
    version: str = ""
    embedded: bool = False
    pid: int | None = None
    source: str = "default"
    binary: str = ""
    why: str = ""
    """For an embedded server: why this binary was chosen (named, or the newest found)."""

    @property
    def is_fake(self) -> bool:
        return self.backend == "fakeredis"

    def describe(self) -> str:
        if self.is_fake:
            return (
                f"{self.version} TCP server at {self.url}, in-process: figures are not "
                "representative"
            )
        what = "embedded redis-server" if self.embedded else "redis-server"
        pid = f", pid {self.pid}" if self.pid else ""
        return f"{what} {self.version} at {_redact(self.url)}{pid}"

    def to_info(self) -> RedisInfo:
        from pytest_cfn.measure.results import RedisInfo

        return RedisInfo(
            version=self.version,
            backend=self.backend,
            embedded=self.embedded,
            url=_redact(self.url),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RedisEndpoint:
        return cls(**data)


def check_url(choice: RedisChoice) -> RedisEndpoint:
    """PING the server at ``choice.url`` and read its version; one UsageError if unusable."""
    from pytest_cfn.server_probe import ServerCheckError, check_server

    try:
        version = check_server(choice.url, PING_TIMEOUT)
    except ServerCheckError as exc:
        raise pytest.UsageError(
            f"{choice.source}: {exc} (or leave --cfn-redis out and pytest-cfn starts a "
            "redis-server for the run)"
        ) from None
    return RedisEndpoint(url=choice.url, version=version, source=choice.source)


def choose_binary(binary: str | None) -> ServerChoice:
    """The redis-server the embedded server will run; NoServerError naming the ways to get one."""
    from pytest_cfn._errors import ServerNotFoundError
    from pytest_cfn.server import choose_redis_server

    try:
        return choose_redis_server(binary)
    except ServerNotFoundError as exc:
        raise NoServerError(f"pytest-cfn: {exc}; {ZERO_INSTALL}", pytrace=False) from None


def start_embedded(
    binary: str | None, choice: ServerChoice | None = None
) -> tuple[RedisEndpoint, StoppableServer]:
    """Start a private redis-server on a free loopback port (``choice`` if already made, as
    the xdist controller's header does); NoServerError when impossible."""
    from pytest_cfn._errors import ServerStartError
    from pytest_cfn.server import RedisServer

    choice = choice if choice is not None else choose_binary(binary)
    try:
        server = RedisServer(choice.path)
        server.start()
    except ServerStartError as exc:
        raise NoServerError(
            f"pytest-cfn: the embedded redis-server ({choice.describe()}) did not start: {exc}",
            pytrace=False,
        ) from None
    endpoint = RedisEndpoint(
        url=server.url,
        version=str(server.version),
        embedded=True,
        pid=server.pid,
        source="embedded",
        binary=choice.path,
        why=choice.why,
    )
    return endpoint, server


def require_fakeredis(choice: RedisChoice) -> None:
    """At start-up: fakeredis:// needs a fakeredis with its TCP server."""
    try:
        import fakeredis
    except ImportError:
        raise pytest.UsageError(
            f"{choice.source}=fakeredis:// needs the fakeredis package ({FAKEREDIS_INSTALL})"
        ) from None
    if not hasattr(fakeredis, "TcpFakeServer"):
        raise pytest.UsageError(
            f"{choice.source}=fakeredis:// needs fakeredis's TCP server, which fakeredis "
            f"{getattr(fakeredis, '__version__', '?')} lacks ({FAKEREDIS_INSTALL})"
        )


class FakeRedisServer:
    """fakeredis's TCP server (real sockets speaking RESP) on a free loopback port, served
    by a daemon thread of this process, so the library's own connections work against it."""

    def __init__(self) -> None:
        import fakeredis

        self.version = f"fakeredis {getattr(fakeredis, '__version__', '')}".strip()
        self._server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"redis://{host!s}:{int(port)}/0"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cfn-fakeredis", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def start_fakeredis(choice: RedisChoice) -> tuple[RedisEndpoint, StoppableServer]:
    server = FakeRedisServer()
    endpoint = RedisEndpoint(
        url=server.url, backend="fakeredis", version=server.version, source=choice.source
    )
    return endpoint, server
