"""Per-stage timestamps of received events, for the micro-benchmark's ``--explain``
(``python -m pytest_cfn.measure.microbench --explain``).

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

from array import array
from collections.abc import Iterable

from pytest_cfn._core.envelope import Envelope

DEFAULT_LIMIT = 2_000_000


class StageProbe:
    """``seq``, ``read_ns`` and ``decoded_ns`` of each received envelope, in arrival order.

    Plain integer arrays, not a dict of tuples: a probe holding a million stamps
    adds nothing for the garbage collector to walk, so it does not lengthen the
    very pauses it is there to find. Sequence numbers are per publisher: probe a
    subscriber that hears one publisher (as the benchmark's does).
    """

    __slots__ = ("decoded", "limit", "overflowed", "read", "seqs")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.overflowed = 0
        self.seqs = array("q")
        self.read = array("q")
        self.decoded = array("q")

    def received(self, read_ns: int, decoded_ns: int, envelopes: Iterable[Envelope]) -> None:
        """One chunk: read from the socket at ``read_ns``, decoded by ``decoded_ns``."""
        seqs = self.seqs
        for env in envelopes:
            if len(seqs) >= self.limit:
                self.overflowed += 1
                continue
            seqs.append(env.seq)
            self.read.append(read_ns)
            self.decoded.append(decoded_ns)

    def stamps(self) -> dict[int, tuple[int, int]]:
        """``seq -> (read_ns, decoded_ns)``, the first arrival of each seq."""
        out: dict[int, tuple[int, int]] = {}
        for seq, read, decoded in zip(self.seqs, self.read, self.decoded, strict=True):
            out.setdefault(seq, (read, decoded))
        return out
