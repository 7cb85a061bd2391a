"""Catch-up from a swarm's stream of critical events, on the bus's publisher connection.

The decisions (when, from where, what to hand on) are in
:mod:`pytest_cfn._core.critical_log`; this runs the few commands they need.
The dispatcher worker calls :meth:`CriticalReplayer.run` between batches, so
replayed events reach the handlers in stream order and never concurrently with
live ones. A catch-up that cannot reach Redis is retried a little later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pytest_cfn._async.publisher import INTERNAL, Publisher
from pytest_cfn._backends.async_backend import monotonic
from pytest_cfn._core.channels import ChannelNames
from pytest_cfn._core.critical_log import CatchUp
from pytest_cfn._core.envelope import Codec, Envelope
from pytest_cfn._core.sequence import SequenceTracker
from pytest_cfn._core.signing import EnvelopeSigner, signed_decoder
from pytest_cfn._errors import CfnError, PermissionDeniedError

log = logging.getLogger("pytest_cfn.replay")

Deliver = Callable[[Envelope], Awaitable[None]]


class CriticalReplayer:
    """Runs :class:`CatchUp` for one subscriber: live checks, catch-ups, the stored cursor."""

    def __init__(
        self,
        catch_up: CatchUp,
        publisher: Publisher,
        codec: Codec,
        tracker: SequenceTracker,
        lock: Any,
        on_error: Callable[[BaseException], None] | None = None,
        *,
        signer: EnvelopeSigner | None = None,
        channels: ChannelNames | None = None,
    ) -> None:
        self.catch_up = catch_up
        self._publisher = publisher
        self._decode: Callable[[bytes], Envelope] = codec.decode
        if signer is not None and channels is not None:
            # An entry is checked against the channel its live copy was published on.
            swarm = catch_up.swarm
            self._decode = signed_decoder(
                signer, codec.decode, lambda env: channels.event(swarm, env.type)
            )
        self._tracker = tracker
        self._lock = lock
        self._on_error = on_error
        self._stored_cursor: str | None = None

    def not_yet_handed_on(self, env: Envelope) -> bool:
        return self.catch_up.not_yet_handed_on(env)

    def observe_live(self, env: Envelope) -> bool:
        """Call under the queue lock, after sequence tracking; False = drop (already replayed)."""
        return self.catch_up.observe_live(env, self._tracker.lost)

    def observe_gaps(self) -> None:
        """Call under the queue lock after a chunk: a new sequence gap asks for a catch-up."""
        self.catch_up.observe_lost(self._tracker.lost)

    def claim(self, message_id: str) -> bool:
        """Call before handing on a live critical envelope; False = a catch-up already did."""
        return self.catch_up.claim(message_id)

    def request(self, reason: str) -> None:
        self.catch_up.request(reason)

    def due(self, now: float) -> bool:
        return self.catch_up.due(now)

    def seconds_until_due(self, now: float) -> float | None:
        return self.catch_up.seconds_until_due(now)

    @property
    def pending(self) -> bool:
        return self.catch_up.pending

    async def run(self, deliver: Deliver) -> int:
        """One catch-up: hand every missed critical event to ``deliver``; returns how many."""
        catch_up = self.catch_up
        with self._lock:
            catch_up.begin(monotonic())
        total = 0
        try:
            if not catch_up.loaded:
                server_time = await self._publisher.call("TIME")
                stored = await self._publisher.call("GET", catch_up.cursor_key)
                catch_up.start_from(stored, server_time)
            # one round trip: the server's TIME and the first page up to the horizon
            server_time, page = await self._publisher.call(*catch_up.first_page_args())
            catch_up.set_horizon(server_time)
            more = True
            while more:
                with self._lock:
                    envelopes, more = catch_up.take(page, self._decode, self._tracker)
                for env in envelopes:
                    await deliver(env)
                total += len(envelopes)
                if more:
                    page = await self._publisher.call(*catch_up.range_args())
            await self._store_cursor()
            with self._lock:
                catch_up.finished(monotonic())
        except PermissionDeniedError as exc:
            # An ACL refuses the stream or the cursor: retrying at once cannot help, and
            # a log line is not enough. The caller hears of it (on_error, stats).
            with self._lock:
                catch_up.failed(monotonic())
            if self._on_error is not None:
                self._on_error(exc)
            else:
                log.warning("catch-up from %s refused: %s", catch_up.stream_key, exc)
        except CfnError as exc:
            log.warning("catch-up from %s failed, retrying later: %s", catch_up.stream_key, exc)
            with self._lock:
                catch_up.failed(monotonic())
        return total

    async def settle(self) -> None:
        """On close: move the stored cursor over what was already handed on."""
        catch_up = self.catch_up
        if not catch_up.loaded:
            return
        try:
            reply = await self._publisher.call(*catch_up.settle_range_args())
            with self._lock:
                catch_up.settle(reply, self._decode)
            await self._store_cursor()
        except CfnError as exc:
            log.info("could not settle the catch-up cursor at close: %s", exc)

    async def _store_cursor(self) -> None:
        command = self.catch_up.cursor_command()
        if command is not None and self.catch_up.cursor != self._stored_cursor:
            await self._publisher.send_publish(command, INTERNAL)
            self._stored_cursor = self.catch_up.cursor

    def stats(self) -> dict[str, Any]:
        return self.catch_up.stats()
