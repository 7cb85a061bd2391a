"""The benchmark's TLS step: what TLS costs per event, against the same server in plain text.

The end-to-end pair of the throughput step (one EventBus publisher process, one
EventBus subscriber process, unpaced, counted at the handler) runs in rounds
alternating the server's plain port and its TLS port, so a change in the
machine's load hits both sides alike. The figures are the TLS delivered rate
beside the plain one, and the CPU each process spends per event over TLS beside
its plain-text CPU: the difference is TLS's cost per event (encryption, record
framing, the extra system calls of an SSL socket).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_cfn._backends.address import parse_redis_url
from pytest_cfn.measure.microbench.config import BenchConfig, Target
from pytest_cfn.measure.microbench.e2e_figures import Item, _median, _pair_cpu_note
from pytest_cfn.measure.microbench.printout import Figure, StepFailure
from pytest_cfn.measure.worker_processes import StepFailedError

Once = Callable[[str], dict[str, Any]]
TITLE = "end to end over TLS (EventBus)"


def measure_tls_cost(config: BenchConfig, target: Target, e2e_once: Once,
                     record: Callable[[str, dict[str, Any]], None]) -> list[Item]:
    """Rounds of ``e2e_once(url)`` on the plain and the TLS URL, then the figures."""
    if parse_redis_url(target.url).tls is None:
        return [StepFailure(
            TITLE, "the server URL is not rediss://; run with --tls (an embedded server "
            "with a TLS port) or --redis rediss://... [--plain-redis redis://...]",
            skipped=True,
        )]
    runs: dict[str, list[dict[str, Any]]] = {"tls": [], "plain": []}
    errors: dict[str, str] = {}
    urls = {"tls": target.url, "plain": target.plain_url}
    for round_index in range(config.repeat):
        for name, url in urls.items():
            if url is None:
                continue
            try:
                result = e2e_once(url)
            except StepFailedError as exc:
                errors.setdefault(name, str(exc))
                continue
            result["round"] = round_index + 1
            runs[name].append(result)
            record(f"tls_cost_{name}", result)
    return tls_figures(runs, errors, config, target)


def tls_figures(
    runs: dict[str, list[dict[str, Any]]], errors: dict[str, str], cfg: BenchConfig,
    target: Target,
) -> list[Item]:
    tls, plain = runs["tls"], runs["plain"]
    if not tls:
        return [StepFailure(TITLE, errors.get("tls", "no round ran"))]
    rate = _median(tls)
    assert rate is not None
    plain_rate = _median(plain)
    method = (
        f"one EventBus publisher process and one EventBus subscriber process, unpaced, over "
        f"TLS (rediss://, certificate verified), counted at the handler: delivered / (last "
        f"delivery - first delivery); {cfg.events:,} events of {cfg.payload} B data per round, "
        f"median of {len(tls)} round(s), alternating with the same pair over the same "
        f"server's plain port (the reference); CPU is process time per event. "
        f"{target.method_tail}"
    )
    items: list[Item] = [Figure(
        key="tls_e2e_delivered", title=TITLE, value=rate, unit="events/s",
        reference_title="plain text end to end" if plain_rate else None,
        reference_value=plain_rate, notes=[_pair_cpu_note(tls)], method=method,
    )]
    if not plain:
        reason = errors.get("plain") or (
            "no plain-text URL of the same server: pass --plain-redis redis://... (or use "
            "--tls) to measure TLS's cost against it"
        )
        items.append(StepFailure("TLS cost per event", reason, skipped="plain" not in errors))
        return items
    for side in ("publisher", "subscriber"):
        key = f"{side}_cpu_us_per_event"
        over_tls, in_plain = _median(tls, key), _median(plain, key)
        if over_tls is None or in_plain is None:
            continue
        items.append(Figure(
            key=f"tls_{side}_cpu_us_per_event",
            title=f"TLS {side} CPU per event",
            value=over_tls, unit="µs/event", better="lower",
            reference_title=f"plain {side}", reference_value=in_plain,
            notes=[
                f"TLS adds {over_tls - in_plain:+.2f} µs per event in the {side} process "
                f"(plain {in_plain:.2f} µs, TLS {over_tls:.2f} µs; medians); plain rounds "
                f"delivered {plain_rate:,.0f} events/s"
            ],
            method=method,
        ))
    return items
