"""Hold the sync and asyncio front ends to the same tests.

``make_frontend("async")`` runs an asyncio event loop in a thread and wraps each
async object so a test can call it like the sync one; a test body written once
then runs against both. Handlers of the async front end run on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

FRONTENDS = ("sync", "async")


class LoopThread:
    """An asyncio loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def tasks(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1

        return int(self.run(count()))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class SyncView:
    """Calls an async object's coroutine methods as if they were blocking."""

    def __init__(self, loop: LoopThread, target: Any) -> None:
        self._loop = loop
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if asyncio.iscoroutinefunction(attr):

            def call(*args: Any, **kwargs: Any) -> Any:
                return self._loop.run(attr(*args, **kwargs))

            return call
        if name == "batch":
            return lambda: self._batch()
        return attr

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:
        batch = self._target.batch()
        self._loop.run(batch.__aenter__())
        try:
            yield
        finally:
            self._loop.run(batch.__aexit__(None, None, None))

    def __enter__(self) -> SyncView:
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.run(self._target.close())


class Frontend:
    """Builds buses of one front end: ``fe.event_bus(url, swarm, agent, **settings)``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = LoopThread() if kind == "async" else None
        self._made: list[Any] = []
        # threads of earlier tests still winding down are not this test's
        self._earlier = {t.ident for t in threading.enumerate() if t.name.startswith("cfn-")}

    def _module(self) -> Any:
        if self.kind == "sync":
            import pytest_cfn

            return pytest_cfn
        import pytest_cfn.aio

        return pytest_cfn.aio

    def make(self, class_name: str, *args: Any, **kwargs: Any) -> Any:
        cls = getattr(self._module(), class_name)
        if self.loop is None:
            obj = cls(*args, **kwargs)
        else:
            loop = self.loop

            async def build() -> Any:
                return cls(*args, **kwargs)

            obj = SyncView(loop, loop.run(build()))
        self._made.append(obj)
        return obj

    def event_bus(self, *args: Any, **kwargs: Any) -> Any:
        return self.make("EventBus", *args, **kwargs)

    def background_workers(self) -> int:
        """Threads (sync) or tasks (async) still running besides the test's own."""
        if self.loop is None:
            return sum(1 for t in threading.enumerate()
                       if t.name.startswith("cfn-") and t.ident not in self._earlier)
        return self.loop.tasks()

    def close(self) -> None:
        for obj in self._made:
            with contextlib.suppress(Exception):
                obj.close()
        if self.loop is not None:
            self.loop.stop()


def wait_until(
    predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.01
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value.

    The deadline only bounds how long a failing test waits (a passing one returns as soon
    as the predicate holds), so the default is generous: on a loaded CI machine, running 2-3x
    slower than a quiet one, a reconnect or a drain that takes 1 s here can take several."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def gated_handler(frontend: Frontend, gate: threading.Event, fn: Callable[[Any], None]) -> Any:
    """A handler that waits for ``gate`` before handling; blocks a thread (sync) or
    awaits without blocking the event loop (async), as a slow handler would."""
    if frontend.kind == "sync":

        def handler(event: Any) -> None:
            gate.wait(10)
            fn(event)

        return handler

    async def async_handler(event: Any) -> None:
        for _ in range(2000):
            if gate.is_set():
                break
            await asyncio.sleep(0.005)
        fn(event)

    return async_handler


def run_together(jobs: list[Any]) -> list[BaseException]:
    """Start every job at the same instant (a barrier); the errors they raised."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        barrier.wait(10)
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors
