"""``python -m pytest_cfn.measure.cluster.faults``: the Event Bus on a real local Redis Cluster
under a fault — a slot migrated, ``CLUSTER FAILOVER``, a master killed — during traffic.

One swarm, one subscriber bus and one publisher bus (sync front end), both given
the URL of one node only. The publisher sends at a fixed rate, every tenth event
at priority 9 (critical: kept in the swarm's stream and replayed), and the last one
too: a subscriber counts a lost event by the sequence gap before a later one, so a
run that ended on a lost event would leave its tail uncounted. A third of the way
in, the fault hits the master that owns the swarm's slot. Counted: sent
(acknowledged by Redis), failed at the publisher, delivered (distinct event ids at
the handler), critical sent / delivered, the subscriber's lost (sequence gaps),
replayed, reconnects and the publisher's redirects. The tests assert on the same
figures (tests/test_cluster.py).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from pytest_cfn import EventBus
from pytest_cfn._core.shard_layout import swarm_slot
from pytest_cfn._errors import CfnError
from pytest_cfn.cluster_server import LocalCluster

FAULTS = ("migrate", "failover", "kill")
CRITICAL_EVERY = 10
FAULT_SETTINGS: dict[str, Any] = {
    "retries": 12, "backoff_cap": 0.5, "ping_interval": 1.0, "breaker_reset": 2.0,
}
"""Retries and backoff that outlast a failover (node timeout + election, a few seconds);
the circuit breaker half-opens after 2 s instead of 30 s, so recovery shows in a short run."""


def _inject(cluster: LocalCluster, fault: str, slot: int) -> None:
    owner = cluster.owner(slot)
    if fault == "migrate":
        target = next(port for port in cluster.masters() if port != owner.port)
        cluster.migrate_slot(slot, cluster.node_for_port(target))
    elif fault == "failover":
        cluster.failover(owner)
    elif fault == "kill":
        cluster.kill(owner)
    else:
        raise ValueError(f"unknown fault {fault!r}; use one of {', '.join(FAULTS)}")


def traffic_under_fault(
    cluster: LocalCluster, fault: str | None, *, swarm: str = "faults", events: int = 3000,
    rate: float = 1500.0, namespace: str = "", settle: float = 15.0,
) -> dict[str, Any]:
    """Publish ``events`` at ``rate`` while ``fault`` hits the swarm's master; the figures."""
    slot = swarm_slot(swarm)
    seen: set[str] = set()
    critical_seen: set[str] = set()
    lock = threading.Lock()

    def handler(event: Any) -> None:
        with lock:
            seen.add(event.id)
            if event.priority >= 9:
                critical_seen.add(event.id)

    sub = EventBus.from_url(cluster.url, swarm=swarm, agent="reader", namespace=namespace,
                            **FAULT_SETTINGS)
    pub = EventBus.from_url(cluster.url, swarm=swarm, agent="writer", namespace=namespace,
                            **FAULT_SETTINGS)
    injector: threading.Thread | None = None
    fault_error: list[BaseException] = []
    sent: list[str] = []
    critical_sent: list[str] = []
    failed = 0
    try:
        sub.subscribe("*", handler)
        owner_before = cluster.owner(slot).port
        start = time.monotonic()
        for n in range(events):
            if fault is not None and n == events // 3:
                def run() -> None:
                    try:
                        _inject(cluster, fault, slot)
                    except BaseException as exc:  # reported by the caller
                        fault_error.append(exc)

                injector = threading.Thread(target=run, name="cfn-fault", daemon=True)
                injector.start()
            due = start + n / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            # The last event is critical too: its replay reveals a lost tail as a gap.
            priority = 9 if n % CRITICAL_EVERY == 0 or n == events - 1 else 5
            try:
                event_id = pub.publish("load.tick", {"n": n}, priority=priority)
            except CfnError:
                failed += 1
                continue
            sent.append(event_id)
            if priority == 9:
                critical_sent.append(event_id)
        try:
            pub.flush()
        except CfnError:
            pass
        if injector is not None:
            injector.join(60)
        if fault_error:
            raise fault_error[0]
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            with lock:
                if set(critical_sent) <= critical_seen and len(seen) >= len(sent):
                    break
            time.sleep(0.05)
        sub.wait_idle(2.0)
        stats, pub_stats = sub.stats(), pub.stats()
    finally:
        sub.close()
        pub.close()
    with lock:
        delivered = len(seen & set(sent))
        critical_delivered = len(critical_seen & set(critical_sent))
    return {
        "fault": fault or "none",
        "slot": slot,
        "owner_before": owner_before,
        "owner_after": cluster.owner(slot).port,
        "sent": len(sent),
        "publish_failed": failed + int(pub_stats["publish_failed"]),
        "delivered": delivered,
        "missing": len(sent) - delivered,
        "critical_sent": len(critical_sent),
        "critical_delivered": critical_delivered,
        "lost": int(stats["lost"]),
        "replayed": int(stats["replayed"]),
        "subscriber_reconnects": int(stats["subscriber_reconnects"]),
        "publisher_reconnects": int(pub_stats["publisher_reconnects"]),
        "redirects": int(pub_stats["redirects"]),
        "cluster": bool(stats["cluster"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_cfn.measure.cluster.faults",
        description="Start a local Redis Cluster (3 masters + 3 replicas) and run the Event "
        "Bus through each fault during traffic; print sent / delivered / lost / replayed.",
    )
    parser.add_argument("--events", type=int, default=3000, help="events per run (3000)")
    parser.add_argument("--rate", type=float, default=1500.0, help="events/s offered (1500)")
    parser.add_argument("--fault", action="append", choices=FAULTS,
                        help="run only this fault (repeatable); default: all three")
    args = parser.parse_args(argv)
    for fault in args.fault or FAULTS:
        with LocalCluster() as cluster:
            result = traffic_under_fault(cluster, fault, events=args.events, rate=args.rate)
        print(
            f"{fault:>8}: slot {result['slot']} {result['owner_before']} -> "
            f"{result['owner_after']}; sent {result['sent']:,} (failed "
            f"{result['publish_failed']}), delivered {result['delivered']:,} (missing "
            f"{result['missing']}), critical {result['critical_delivered']}/"
            f"{result['critical_sent']}, lost {result['lost']}, replayed {result['replayed']}, "
            f"reconnects sub {result['subscriber_reconnects']} pub "
            f"{result['publisher_reconnects']}, redirects {result['redirects']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
