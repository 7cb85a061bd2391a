"""Per-stage timestamps of received events, for ``python -m pytest_cfn.bench --explain``.

A latency tail has an owner: the sender's schedule, the publish call, the
socket write, the server and kernel, the subscriber's read and decode, or the
hand-over to the handler. A bus given a :class:`StageProbe` notes, for every
event it receives, when the chunk holding it was read from the socket and when
that chunk had been decoded and checked; the publish call's time is the
envelope's ``ts`` and the handler notes its own time, so every stage of one
event can be told apart. Off (``None``) by default: the hot path then pays one
``is None`` test per chunk.
"""

from __future__ import annotations

from collections.abc import Iterable

from pytest_cfn._core.envelope import Envelope

DEFAULT_LIMIT = 2_000_000


class StageProbe:
    """``(read_ns, decoded_ns)`` by ``(publisher, seq)`` of each received envelope."""

    __slots__ = ("limit", "overflowed", "stamps")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.overflowed = 0
        self.stamps: dict[tuple[str, int], tuple[int, int]] = {}

    def received(self, read_ns: int, decoded_ns: int, envelopes: Iterable[Envelope]) -> None:
        """One chunk: read from the socket at ``read_ns``, decoded by ``decoded_ns``."""
        stamps = self.stamps
        for env in envelopes:
            if len(stamps) >= self.limit:
                self.overflowed += 1
                continue
            stamps[(env.publisher, env.seq)] = (read_ns, decoded_ns)
