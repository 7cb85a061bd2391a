"""What the Event Bus and the Messenger offer alike over their engine."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

from pytest_cfn._async.engine import BusEngine
from pytest_cfn._async.publisher import PublishBatch
from pytest_cfn._core.inbound import MalformedMessage
from pytest_cfn._core.stages import StageProbe

_F = TypeVar("_F", bound="EngineFrontend")


class EngineFrontend:
    """Batching, flushing, waiting, closing and the malformed set-aside of one engine."""

    _engine: BusEngine

    def batch(self) -> PublishBatch:
        """``async with x.batch():`` what is published inside is written in one go at the
        end (or every 1,000 commands / 256 KB), like a pipeline."""
        return PublishBatch(self._engine.publisher)

    async def flush(self) -> int:
        """Write what is batched and wait until Redis has acknowledged every publish."""
        return await self._engine.publisher.flush()

    async def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until everything received has been handed to the handlers."""
        return await self._engine.wait_idle(timeout)

    def attach_stage_probe(self, probe: StageProbe | None) -> None:
        """Note per-stage timestamps of every received event in ``probe`` (None: stop);
        used by ``python -m pytest_cfn.measure.microbench --explain``."""
        self._engine.stage_probe = probe

    @property
    def malformed(self) -> list[MalformedMessage]:
        """The last malformed messages that were set aside (channel, payload, reason)."""
        return self._engine.malformed

    async def close(self) -> None:
        """Flush, then close both connections and stop the workers."""
        await self._engine.close()

    async def __aenter__(self: _F) -> _F:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
