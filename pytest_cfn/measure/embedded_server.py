"""The Redis server a benchmark command measures: the one at a URL it was given (checked
first), else a real ``redis-server`` started here on a free loopback port and stopped by its
own pid on the way out; with ``tls``, one with a TLS port beside its plain one.

``cfn bench``, ``cfn calibrate`` and ``python -m pytest_cfn.measure.microbench`` all start
their server here, so all three describe it the same way in their headers and JSON.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from pytest_cfn.measure.results import redact_url


@dataclass(frozen=True)
class MeasuredServer:
    """What a benchmark needs to know of its server."""

    url: str
    embedded: bool
    redis_benchmark: str | None
    """The ``redis-benchmark`` beside the server (embedded) or on ``PATH``; None without one."""
    description: str
    """One line for the header: the URL (password redacted) or the embedded server's pid."""
    plain_url: str | None = None
    """The plain-text port of a TLS server, measured as the reference TLS is compared with."""


@contextmanager
def measured_server(
    url: str | None, *, tls: bool = False, plain_url: str | None = None
) -> Iterator[MeasuredServer]:
    """The server at ``url`` (its ``plain_url`` beside it, if given), else an embedded one."""
    if url is not None:
        from pytest_cfn.server_probe import check_server

        check_server(url)
        yield MeasuredServer(url, False, shutil.which("redis-benchmark"),
                             f"server at {redact_url(url)}", plain_url)
        return
    if tls:
        from pytest_cfn.tls_server import TlsRedisServer

        tls_server = TlsRedisServer().start()
        try:
            yield MeasuredServer(
                tls_server.tls_url, True, tls_server.server.redis_benchmark,
                f"embedded redis-server pid {tls_server.server.pid}, TLS port "
                f"{tls_server.tls_port} (plain port {tls_server.server.port} as reference)",
                tls_server.url,
            )
        finally:
            tls_server.stop()
        return
    from pytest_cfn.server import RedisServer

    server = RedisServer().start()
    try:
        yield MeasuredServer(server.url, True, server.redis_benchmark,
                             f"embedded redis-server pid {server.pid} at {server.url} "
                             f"({server.choice.describe()})")
    finally:
        server.stop()


def server_facts(url: str) -> tuple[str, int | None]:
    """The server's version and ``maxclients`` (None where CONFIG GET is refused)."""
    client = redis.Redis.from_url(url, protocol=2, socket_connect_timeout=5, socket_timeout=5)
    try:
        version = str(client.info("server").get("redis_version", "unknown"))
        try:
            maxclients: int | None = int(str(client.config_get("maxclients")["maxclients"]))
        except (redis.ResponseError, KeyError, ValueError):
            maxclients = None
    finally:
        client.close()
    return version, maxclients
