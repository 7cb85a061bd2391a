"""A TCP proxy on loopback that injects a known fault between Redis and its clients.

Theory of operation: every client connection gets its own upstream connection to the server
and three threads: one copies client -> server as it arrives; one reads server -> client,
stamps each chunk with its arrival time and queues it; one sends each queued chunk once
``delay_s`` has passed since its arrival, in order. So every byte the server sends reaches
its client ``delay_s`` later (a one-way delay on the delivery path), and what clients send
reaches the server at once: a publish -> delivery latency grows by exactly ``delay_s`` plus the
proxy's own hop, which a reference run at a small base delay measures (a zero delay takes a
different path: the sending thread is woken per chunk instead of by its timer).

The sending thread wakes late by its timer's slack and the scheduler's delay (40-80 µs here,
idle or beside a busy process), so the delay a chunk really got is not ``delay_s``. The proxy
therefore stamps each chunk as it is handed to the client and keeps the hold it really applied,
per event carried (:meth:`DelayProxy.holds`), and, for each harness event, the time from its
intended send time to its arrival at the proxy (:meth:`DelayProxy.upstream_ns`): the
calibration compares the harness's shift with the fault as injected, less what moved before
the proxy.

A known loss: :meth:`DelayProxy.drop_events` arms the proxy to drop the next ``count``
non-critical pub/sub events (priority below 8 in the JSON envelope) on one subscriber
connection, the first to carry one after ``after`` (a ``time.monotonic`` instant). The
server -> client stream is cut into whole RESP frames for this, so a dropped event leaves the
stream well formed; nothing else is dropped or changed.

Only for measuring the measuring instrument (``cfn calibrate``); loopback only.
"""

from __future__ import annotations

import collections
import re
import socket
import threading
import time
from dataclasses import dataclass, field

from pytest_cfn._errors import CfnError

CHUNK = 1 << 16
_PRIORITY = re.compile(rb'"priority":(\d)')
_INTENDED = re.compile(rb'"data":\{"t":(\d+)')
_EVENT_HEADS = (b"*4\r\n$8\r\npmessage\r\n", b">4\r\n$8\r\npmessage\r\n",
                b"*3\r\n$7\r\nmessage\r\n", b">3\r\n$7\r\nmessage\r\n")
_AGGREGATES = {ord("*"): 1, ord(">"): 1, ord("~"): 1, ord("%"): 2, ord("|"): 2}
_BULKS = {ord("$"), ord("="), ord("!")}


class ProxyError(CfnError):
    """The delay proxy could not listen or reach the server."""


def frame_end(buf: bytes | bytearray, pos: int = 0) -> int | None:
    """End offset of the RESP2/RESP3 frame starting at ``pos``; None while it is incomplete."""
    if pos >= len(buf):
        return None
    line = buf.find(b"\r\n", pos)
    if line < 0:
        return None
    kind = buf[pos]
    if kind in _BULKS:
        size = int(buf[pos + 1:line])
        if size < 0:
            return line + 2
        stop = line + 2 + size + 2
        return stop if stop <= len(buf) else None
    per_item = _AGGREGATES.get(kind)
    if per_item is None:
        return line + 2
    items = int(buf[pos + 1:line])
    at = line + 2
    for _ in range(max(items, 0) * per_item):
        found = frame_end(buf, at)
        if found is None:
            return None
        at = found
    return at


def droppable_event(frame: bytes) -> bool:
    """A pub/sub event on an ``event:`` channel with a priority below 8 (not critical)."""
    if not frame.startswith(_EVENT_HEADS):
        return False
    head = frame[:400]
    if b"event:" not in head:
        return False
    found = _PRIORITY.search(frame)
    return found is not None and int(found.group(1)) < 8


@dataclass
class _DropPlan:
    count: int
    after: float
    target: int | None = None
    dropped: int = 0
    channels: collections.Counter[bytes] = field(default_factory=collections.Counter)


class DelayProxy:
    """Listen on 127.0.0.1, forward to ``(host, port)`` with ``delay_s`` on the way back."""

    def __init__(self, host: str, port: int, delay_s: float = 0.0) -> None:
        self.upstream = (host, port)
        self.delay_s = delay_s
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._plan: _DropPlan | None = None
        self._connections = 0
        self._holds: list[float] = []
        self._upstream: list[int] = []
        self.first_event_at: float | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise ProxyError("the proxy is not started")
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> DelayProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", 0))
        except OSError as exc:
            listener.close()
            raise ProxyError(f"the delay proxy cannot listen on 127.0.0.1: {exc}") from exc
        listener.listen(512)
        self._listener = listener
        threading.Thread(target=self._accept, name="delay-proxy-accept", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
            listener, self._listener = self._listener, None
        for sock in [*sockets, *([listener] if listener else [])]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self, delay_s: float) -> None:
        """A new delay for the connections made from now on; forgets the first event seen
        and the holds applied so far."""
        self.delay_s = delay_s
        self.first_event_at = None
        self._holds = []
        self._upstream = []

    def holds(self) -> list[float]:
        """Seconds each pub/sub event was really held since :meth:`reset`, from its chunk's
        arrival to the moment the proxy handed it to the client, one entry per event."""
        return list(self._holds)

    def upstream_ns(self) -> list[int]:
        """Nanoseconds from each harness event's intended send time (its ``data.t``, wall
        clock) to its arrival at the proxy since :meth:`reset`: the part of a delivery's
        latency before the proxy, which the proxy sees but does not cause."""
        return list(self._upstream)

    def drop_events(self, count: int, after: float) -> None:
        """Drop the next ``count`` non-critical events on one subscriber connection, the first
        to carry one after the monotonic instant ``after``."""
        with self._lock:
            self._plan = _DropPlan(count=count, after=after)

    def dropped(self) -> tuple[int, dict[str, int]]:
        """Events dropped so far and their channels."""
        with self._lock:
            plan = self._plan
            if plan is None:
                return 0, {}
            return plan.dropped, {k.decode(errors="replace"): v for k, v in plan.channels.items()}

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5.0)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
                self._connections += 1
                ident = self._connections
            self._pipe(ident, client, server, self.delay_s)

    def _pipe(self, ident: int, client: socket.socket, server: socket.socket,
              delay_s: float) -> None:
        queue: collections.deque[tuple[float, bytes, int]] = collections.deque()
        holds = self._holds
        ready = threading.Condition()
        done = threading.Event()

        def upstream() -> None:
            try:
                while chunk := client.recv(CHUNK):
                    server.sendall(chunk)
            except OSError:
                pass
            finally:
                done.set()
                _shut(server)

        def downstream() -> None:
            pending = bytearray()
            try:
                while chunk := server.recv(CHUNK):
                    now = time.monotonic()
                    pending += chunk
                    chunk, events = self._filter(ident, pending, now)
                    if chunk:
                        with ready:
                            queue.append((now + delay_s, chunk, events))
                            ready.notify()
            except OSError:
                pass
            finally:
                done.set()
                with ready:
                    ready.notify()

        def sender() -> None:
            try:
                while True:
                    with ready:
                        while not queue and not done.is_set():
                            ready.wait(0.5)
                        if not queue:
                            return
                        due, chunk, events = queue.popleft()
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if events:
                        holds.extend([time.monotonic() - due + delay_s] * events)
                    client.sendall(chunk)
            except OSError:
                pass
            finally:
                _shut(client)

        for target, name in ((upstream, "up"), (downstream, "down"), (sender, "send")):
            threading.Thread(target=target, name=f"delay-proxy-{ident}-{name}",
                             daemon=True).start()

    def _filter(self, ident: int, pending: bytearray, now: float) -> tuple[bytes, int]:
        """Whole frames out of ``pending`` (the rest stays for the next chunk), minus the
        events the drop plan takes, and how many pub/sub events they carry."""
        out = bytearray()
        pos = 0
        events = 0
        arrived_ns = time.time_ns()
        while (end := frame_end(pending, pos)) is not None:
            frame = bytes(pending[pos:end])
            pos = end
            event = frame.startswith(_EVENT_HEADS)
            if event and self.first_event_at is None:
                self.first_event_at = now
            if self._take(ident, frame, now):
                continue
            events += event
            if event and (intended := _INTENDED.search(frame)) is not None:
                self._upstream.append(arrived_ns - int(intended.group(1)))
            out += frame
        del pending[:pos]
        return bytes(out), events

    def _take(self, ident: int, frame: bytes, now: float) -> bool:
        plan = self._plan
        if plan is None or plan.dropped >= plan.count or now < plan.after:
            return False
        if plan.target not in (None, ident) or not droppable_event(frame):
            return False
        with self._lock:
            if plan.target is None:
                plan.target = ident
            plan.dropped += 1
            channel = frame.split(b"\r\n")[6] if frame.startswith((b"*4", b">4")) else b"?"
            plan.channels[channel] += 1
        return True


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
