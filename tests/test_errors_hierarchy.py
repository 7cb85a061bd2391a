"""One exception hierarchy: an unreachable server is a CfnError from every entry point,
OS errors are mapped at the backend edge, every class is exported by both front ends."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
from frontends import Frontend

import pytest_cfn
import pytest_cfn.aio
from pytest_cfn import (
    CfnError,
    ConnectionLostError,
    InvalidOptionError,
    PublishFailedError,
    ServerRefusedError,
    ServerUnavailableError,
    UnknownSettingError,
)
from pytest_cfn._errors import ALL_ERRORS

PACKAGE = Path(pytest_cfn.__file__).parent

FAST = {"connect_timeout": 0.5, "retries": 1, "backoff_base": 0.01, "backoff_cap": 0.02}


def where(url: str) -> str:
    return url.removeprefix("redis://").removesuffix("/0")


def assert_unavailable(exc: BaseException, url: str) -> None:
    assert isinstance(exc, ServerUnavailableError) and isinstance(exc, CfnError), repr(exc)
    assert not isinstance(exc, (PublishFailedError, ConnectionLostError)), repr(exc)
    assert f"cannot reach Redis at {where(url)}" in str(exc)
    assert "0 unacknowledged" not in str(exc)


def test_unreachable_server_is_server_unavailable_from_every_entry_point(
        fe: Frontend, ns: str, unreachable_url: str) -> None:
    bus = fe.event_bus(unreachable_url, "s1", "a1", namespace=ns, **FAST)
    messenger = fe.make("Messenger", unreachable_url, "s1", "a1", namespace=ns, **FAST)
    state = fe.make("SwarmState", unreachable_url, namespace=ns, timeout=0.5)
    calls: list[tuple[str, Any]] = [
        ("EventBus.subscribe", lambda: bus.subscribe("*", print)),
        ("EventBus.connect", bus.connect),
        ("EventBus.publish", lambda: bus.publish("agent.spawn", 1)),
        ("EventBus.publish p9", lambda: bus.publish("cfn.loop.phase.start", 1, priority=9)),
        ("Messenger.listen", messenger.listen),
        ("Messenger.connect", messenger.connect),
        ("Messenger.request", lambda: messenger.request("s2", 1, timeout=1)),
        ("Messenger.send", lambda: messenger.send("s2", 1)),
        ("SwarmState.save", lambda: state.save("s1", phase="auth")),
        ("SwarmState.load", lambda: state.load("s1")),
        ("SwarmState.swarms", state.swarms),
    ]
    for name, call in calls:
        with pytest.raises(CfnError) as info:
            call()
        assert_unavailable(info.value, unreachable_url)
        assert info.type is ServerUnavailableError, name
    # a subscribe that failed leaves nothing half-made: no handler, no worker
    assert bus.stats()["handlers"] == 0 and bus.stats()["connections"] == 0
    for closable in (bus, messenger, state):
        closable.close()
    assert fe.background_workers() == 0


def test_a_refused_login_is_server_refused(fe: Frontend, fresh_redis_server: Any, ns: str) -> None:
    import redis

    client = redis.Redis.from_url(fresh_redis_server.url, protocol=2)
    client.config_set("requirepass", "right")
    client.close()
    bad = fresh_redis_server.url.replace("redis://", "redis://:wrong@")
    bus = fe.event_bus(bad, "s1", "a1", namespace=ns, **FAST)
    with pytest.raises(ServerRefusedError, match="refused the connection"):
        bus.subscribe("*", print)
    with pytest.raises(ServerRefusedError, match="refused the connection"):
        bus.publish("agent.spawn", 1)
    state = fe.make("SwarmState", bad, namespace=ns, timeout=0.5)
    with pytest.raises(ServerRefusedError):
        state.load("s1")


def test_every_error_class_is_defined_once_and_exported_by_both_front_ends() -> None:
    for cls in ALL_ERRORS:
        assert cls.__module__ == "pytest_cfn._errors", cls
        assert getattr(pytest_cfn, cls.__name__) is cls, cls
        assert getattr(pytest_cfn.aio, cls.__name__) is cls, cls
        assert cls.__name__ in pytest_cfn.__all__ and cls.__name__ in pytest_cfn.aio.__all__
        assert issubclass(cls, CfnError)
    defined = {
        name for name, obj in inspect.getmembers(pytest_cfn._errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == "pytest_cfn._errors"
    }
    assert defined == {cls.__name__ for cls in ALL_ERRORS}


def test_no_exception_class_is_defined_outside_the_errors_module() -> None:
    library = [PACKAGE / d for d in ("_async", "_sync", "_core", "_backends")]
    offenders = []
    for folder in library:
        for path in folder.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and (b.id.endswith("Error") or b.id == "Exception")
                    for b in node.bases
                ):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert offenders == []


def test_the_readme_documents_every_error_class() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    missing = [cls.__name__ for cls in ALL_ERRORS if cls.__name__ not in readme]
    assert missing == []


@pytest.mark.parametrize("class_name", ["EventBus", "Messenger", "SharedConnections"])
def test_an_unknown_setting_is_named_beside_the_settings_there_are(
        fe: Frontend, class_name: str, unreachable_url: str) -> None:
    args = (unreachable_url, "shared") if class_name == "SharedConnections" else (
        unreachable_url, "s1", "a1")
    with pytest.raises(UnknownSettingError) as caught:
        fe.make(class_name, *args, socket_timout=2.0, retries=1)  # a typo of socket_timeout
    message = str(caught.value)
    assert "unknown setting 'socket_timout'" in message, message
    assert "socket_timeout" in message.split("the settings are:", 1)[1], message
    assert "retries" in message  # the known one is listed, not complained of
    # an InvalidOptionError as every bad setting is, and a TypeError as any unknown keyword
    assert isinstance(caught.value, InvalidOptionError) and isinstance(caught.value, TypeError)
    with pytest.raises(UnknownSettingError, match="unknown settings 'a', 'b'"):
        fe.make(class_name, *args, b=1, a=2)
