"""``python -m pytest_cfn.measure.cluster.messenger_faults``: the Messenger on a real local Redis
Cluster under a fault — a slot migrated, ``CLUSTER FAILOVER``, a master killed — during
traffic, with sent / delivered / lost / replayed counted.

Two swarms on different masters, both given the URL of one node only: a sender and a
receiver whose master the fault hits. The sender sends messages at a fixed rate
(every tenth at priority 9) while a second thread asks the receiver a request every
20 ms. A third of the way in, the fault hits the master that owns the receiver's
slot: its subscriber must re-subscribe on the new owner (counted as a reconnect) and
the sender must follow the redirect (counted). After the run the sender sends tail
markers until one arrives, so a lost tail shows as a sequence gap. With
``--history`` the sender keeps every message in the receiver's history list
(``persist_history``) and *replayed* is how many of the messages the handler missed
the receiver finds there (``stored_history``). Counted: sent (``send`` returned),
failed at the sender, delivered (distinct message ids at the handler), missing, the
receiver's lost (sequence gaps), replayed, reconnects, redirects, requests answered
and failed (and answered after the fault). The tests assert on the same figures
(tests/test_cluster_messenger.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pytest_cfn._core.shard_layout import swarm_slot
from pytest_cfn._errors import CfnError
from pytest_cfn.cluster_server import LocalCluster
from pytest_cfn.measure.cluster.faults import FAULT_SETTINGS, FAULTS, _inject

FRONT_ENDS = ("sync", "async")
CRITICAL_EVERY = 10
REQUEST_INTERVAL = 0.02
REQUEST_TIMEOUT = 1.0


class _Calls:
    """Calls a Messenger of either front end as a blocking call (asyncio: on a loop thread)."""

    def __init__(self, kind: str) -> None:
        if kind not in FRONT_ENDS:
            raise ValueError(f"unknown front end {kind!r}; use one of {', '.join(FRONT_ENDS)}")
        self.kind = kind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        if kind == "async":
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                            name="cfn-bench-loop")
            self._thread.start()

    def make(self, url: str, swarm: str, agent: str, **settings: Any) -> Any:
        if self._loop is None:
            from pytest_cfn import Messenger

            return Messenger.from_url(url, swarm, agent, **settings)
        from pytest_cfn.aio import Messenger as AsyncMessenger

        async def build() -> Any:
            return AsyncMessenger.from_url(url, swarm, agent, **settings)

        return self.run(build())

    def run(self, value: Any, timeout: float = 60.0) -> Any:
        """``value`` itself (sync), or the awaited result of the coroutine (asyncio)."""
        if self._loop is None:
            return value
        return asyncio.run_coroutine_threadsafe(value, self._loop).result(timeout)

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.run(method(*args, **kwargs))

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()


def _client_names(cluster: LocalCluster, port: int) -> list[str]:
    client = cluster.client(cluster.node_for_port(port))
    try:
        return [str(c["name"]) for c in client.client_list()]
    finally:
        client.close()


def _swarm_on(cluster: LocalCluster, prefix: str, avoid: set[int]) -> str:
    n = 0
    while cluster.owner(swarm_slot(f"{prefix}{n}")).port in avoid:
        n += 1
    return f"{prefix}{n}"


def messages_under_fault(
    cluster: LocalCluster, fault: str | None, *, kind: str = "sync", messages: int = 3000,
    rate: float = 1500.0, namespace: str = "", history: bool = False, settle: float = 15.0,
) -> dict[str, Any]:
    """Send ``messages`` at ``rate`` while ``fault`` hits the receiver's master; the figures."""
    receiver_swarm = _swarm_on(cluster, "inbox", set())
    slot = swarm_slot(receiver_swarm)
    owner_before = cluster.owner(slot).port
    sender_swarm = _swarm_on(cluster, "outbox", {owner_before})
    seen: set[str] = set()
    lock = threading.Lock()
    calls = _Calls(kind)

    def on_message(message: Any) -> None:
        with lock:
            seen.add(message.id)

    settings = dict(FAULT_SETTINGS, namespace=namespace)
    receiver = calls.make(cluster.url, receiver_swarm, "inbox", **settings)
    sender = calls.make(cluster.url, sender_swarm, "outbox", persist_history=history,
                        history_size=messages + 1000, history_ttl=600, **settings)
    sent: list[str] = []
    failed = 0
    requests = {"answered": 0, "failed": 0, "after_fault": 0}
    fault_done = threading.Event()
    sending_done = threading.Event()
    fault_error: list[BaseException] = []

    def ask() -> None:
        n = 0
        while not sending_done.is_set():
            n += 1
            try:
                reply = calls.call(sender.request, receiver_swarm, n, timeout=REQUEST_TIMEOUT)
                ok = reply.data == n
            except CfnError:
                ok = False
            with lock:
                requests["answered" if ok else "failed"] += 1
                if ok and fault_done.is_set():
                    requests["after_fault"] += 1
            time.sleep(REQUEST_INTERVAL)

    def inject() -> None:
        try:
            if fault is not None:
                _inject(cluster, fault, slot)
        except BaseException as exc:  # reported by the caller
            fault_error.append(exc)
        finally:
            fault_done.set()

    asker = threading.Thread(target=ask, name="cfn-bench-asker", daemon=True)
    injector = threading.Thread(target=inject, name="cfn-fault", daemon=True)
    markers = 0
    try:
        calls.call(receiver.on_message, on_message)
        calls.call(receiver.on_request, lambda m: m.data)
        calls.call(sender.listen)
        asker.start()
        start = time.monotonic()
        for n in range(messages):
            if n == messages // 3:
                injector.start()
            pause = start + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            priority = 9 if n % CRITICAL_EVERY == 0 else 5
            try:
                sent.append(calls.call(sender.send, receiver_swarm, {"n": n}, priority=priority))
            except CfnError:
                failed += 1
        injector.join(60)
        if fault_error:
            raise fault_error[0]
        try:
            calls.call(sender.flush)
        except CfnError:
            pass
        time.sleep(3 * REQUEST_INTERVAL + REQUEST_TIMEOUT)  # some requests after the fault
        sending_done.set()
        asker.join(REQUEST_TIMEOUT + 5)
        # Tail markers until one arrives: a lost tail then shows as a sequence gap.
        deadline = time.monotonic() + settle
        marker_ids: set[str] = set()
        while time.monotonic() < deadline:
            with lock:
                if marker_ids & seen:
                    break
            try:
                marker_ids.add(calls.call(sender.send, receiver_swarm, {"marker": markers}))
                calls.call(sender.flush)
                markers += 1
            except CfnError:
                pass
            time.sleep(0.1)
        calls.call(receiver.wait_idle, 2.0)
        replayed = 0
        with lock:
            missed = set(sent) - seen
        if history and missed:
            stored = calls.call(receiver.stored_history)
            replayed = len(missed & {m.id for m in stored})
        stats = receiver.stats()
        sender_stats = sender.stats()
        owner_after = cluster.owner(slot).port
        new_owner_has_subscriber = any(
            name.startswith(f"cfn:messages-sub:{receiver_swarm}:")
            for name in _client_names(cluster, owner_after)
        )
    finally:
        sending_done.set()
        for messenger in (receiver, sender):
            try:
                calls.call(messenger.close)
            except CfnError:
                pass
        calls.stop()
    with lock:
        delivered = len(seen & set(sent))
    return {
        "fault": fault or "none",
        "front_end": kind,
        "slot": slot,
        "owner_before": owner_before,
        "owner_after": owner_after,
        "sent": len(sent),
        "send_failed": failed + int(sender_stats["publish_failed"]),
        "delivered": delivered,
        "missing": len(sent) - delivered,
        "lost": int(stats["lost"]),
        "replayed": replayed,
        "markers": markers,
        "subscriber_reconnects": int(stats["subscriber_reconnects"]),
        "publisher_reconnects": int(sender_stats["publisher_reconnects"]),
        "redirects": int(sender_stats["redirects"]),
        "asks": int(sender_stats.get("asks", 0)),
        "requests_answered": requests["answered"],
        "requests_failed": requests["failed"],
        "requests_after_fault": requests["after_fault"],
        "new_owner_has_subscriber": new_owner_has_subscriber,
        "cluster": bool(stats["cluster"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_cfn.measure.cluster.messenger_faults",
        description="Start a local Redis Cluster (3 masters + 3 replicas) for each fault and "
        "run the Messenger through it during traffic; print sent / delivered / lost / "
        "replayed, reconnects, redirects and requests answered.",
    )
    parser.add_argument("--messages", type=int, default=3000, help="messages per run (3000)")
    parser.add_argument("--rate", type=float, default=1500.0, help="messages/s offered (1500)")
    parser.add_argument("--fault", action="append", choices=FAULTS,
                        help="run only this fault (repeatable); default: all three")
    parser.add_argument("--front-end", choices=FRONT_ENDS, default="sync",
                        help="the Messenger's front end (sync)")
    parser.add_argument("--history", action="store_true",
                        help="persist_history on the sender; replayed = missed messages "
                        "found in the receiver's stored history")
    args = parser.parse_args(argv)
    if args.messages < 10 or args.rate <= 0:
        parser.error("--messages must be >= 10 and --rate > 0")
    for fault in args.fault or FAULTS:
        with LocalCluster() as cluster:
            r = messages_under_fault(cluster, fault, kind=args.front_end,
                                     messages=args.messages, rate=args.rate,
                                     history=args.history)
        print(
            f"{fault:>8} ({r['front_end']}): slot {r['slot']} {r['owner_before']} -> "
            f"{r['owner_after']}; sent {r['sent']:,} (failed {r['send_failed']}), delivered "
            f"{r['delivered']:,} (missing {r['missing']}), lost {r['lost']}, replayed "
            f"{r['replayed']}, reconnects sub {r['subscriber_reconnects']} pub "
            f"{r['publisher_reconnects']}, redirects {r['redirects']} (ASK {r['asks']}), "
            f"requests answered {r['requests_answered']} failed {r['requests_failed']} "
            f"(answered after the fault {r['requests_after_fault']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
