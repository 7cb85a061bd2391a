"""check_server: one line naming what is at a URL that is not a usable Redis, against real
listeners on loopback; the version of one that is."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from not_redis import EXPECTED, NOT_REDIS, not_redis_url

from pytest_cfn import CfnError
from pytest_cfn.server import RedisServer
from pytest_cfn.server_probe import ServerCheckError, check_server


@pytest.mark.parametrize("kind", NOT_REDIS)
def test_each_kind_of_wrong_server_is_named_in_one_line(kind: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        url = not_redis_url(kind, stack, tmp_path)
        started = time.monotonic()
        with pytest.raises(ServerCheckError) as caught:
            check_server(url, timeout=1.0)
        elapsed = time.monotonic() - started
    message = str(caught.value)
    assert EXPECTED[kind] in message
    assert "\n" not in message and "Traceback" not in message
    assert isinstance(caught.value, CfnError) and isinstance(caught.value, ConnectionError)
    assert elapsed < 4.0


def test_a_server_with_the_right_password_answers_with_its_version(
    fresh_redis_server: RedisServer,
) -> None:
    admin = redis.Redis(port=fresh_redis_server.port, protocol=2)
    admin.config_set("requirepass", "right-one")
    admin.close()
    url = f"redis://:right-one@127.0.0.1:{fresh_redis_server.port}/0"
    assert check_server(url) == fresh_redis_server.version


def test_a_plain_server_answers_with_its_version(redis_server: RedisServer) -> None:
    assert check_server(redis_server.url) == redis_server.version


def test_a_password_the_server_does_not_have_is_named(redis_server: RedisServer) -> None:
    with pytest.raises(ServerCheckError, match="has no password set but the URL gives one"):
        check_server(f"redis://:extra@127.0.0.1:{redis_server.port}/0")


def test_a_missing_unix_socket_is_named(tmp_path: Path) -> None:
    with pytest.raises(ServerCheckError, match="no such socket file"):
        check_server(f"unix://{tmp_path}/redis.sock")


def test_every_public_name_is_exported_lazily_from_one_table() -> None:
    import pytest_cfn
    import pytest_cfn.aio

    for module in (pytest_cfn, pytest_cfn.aio):
        names = [n for n in module.__all__ if n != "__version__"]
        assert names == sorted(module._EXPORTS)
        for name in names:
            assert getattr(module, name).__name__ == name
    assert pytest_cfn.ServerCheckError is ServerCheckError
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = pytest_cfn.Nope  # type: ignore[attr-defined]
