"""Handlers that have proved fast run in the socket reader; a slow one sends dispatching
back to the dispatcher worker, in order, nothing lost (sync and asyncio alike)."""

from __future__ import annotations

import time
from typing import Any

from frontends import Frontend, wait_until

FAST = 1500


def test_fast_handlers_go_inline_and_a_slow_call_sends_them_back(fe: Frontend, redis_server: Any,
                                                                 ns: str) -> None:
    got: list[int] = []

    def handler(event: Any) -> None:
        if event.data < 0:
            time.sleep(0.05)
        got.append(event.data)

    sub = fe.event_bus(redis_server.url, "s1", "sub", namespace=ns)
    sub.subscribe("tick", handler)
    pub = fe.event_bus(redis_server.url, "s1", "pub", namespace=ns)
    assert sub.stats()["inline_dispatch"] is False, "handlers start on the dispatcher"
    for n in range(FAST):
        pub.publish("tick", n)
    pub.flush()
    assert wait_until(lambda: len(got) == FAST)
    assert wait_until(lambda: sub.stats()["inline_dispatch"] is True)
    for n in range(FAST, FAST + 50):
        time.sleep(0.002)
        pub.publish("tick", n)
    pub.flush()
    assert wait_until(lambda: len(got) == FAST + 50)
    assert sub.stats()["inline_delivered"] >= 10, "a slow trickle goes inline"
    pub.publish("tick", -1)
    pub.flush()
    assert wait_until(lambda: len(got) == FAST + 51)
    assert wait_until(lambda: sub.stats()["inline_dispatch"] is False), "a 50 ms call ends it"
    for n in range(FAST + 50, FAST + 150):
        pub.publish("tick", n)
    pub.flush()
    assert wait_until(lambda: len(got) == FAST + 151)
    assert got == [*range(FAST + 50), -1, *range(FAST + 50, FAST + 150)]
    stats = sub.stats()
    assert (stats["delivered"], stats["lost"], stats["dropped"]) == (FAST + 151, 0, 0)
    assert sub.wait_idle(2.0)


def test_messenger_handlers_never_run_in_the_reader(fe: Frontend, redis_server: Any,
                                                    ns: str) -> None:
    got: list[Any] = []
    receiver = fe.make("Messenger", redis_server.url, "b", "r1", namespace=ns)
    receiver.on_message(got.append)
    sender = fe.make("Messenger", redis_server.url, "a", "s1", namespace=ns)
    for n in range(FAST):
        sender.send("b", {"n": n})
    sender.flush()
    assert wait_until(lambda: len(got) == FAST)
    assert receiver.stats()["inline_dispatch"] is False
