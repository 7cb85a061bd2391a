"""``--explain``: where each event's latency went, stage by stage, so the tail has an owner.

The paced sender notes when each publish's write had returned; the subscriber's
bus notes when the chunk holding each event was read from the socket and when it
had been decoded (``pytest_cfn._core.stages``); the handler notes its own time;
the envelope carries the publish call's time and the data the intended send
time. All are ``time.time_ns()`` on one host, joined by sequence number:

- schedule: intended send time -> publish call (the sender's own lateness)
- publish: publish call -> write returned (envelope, encode, the socket write)
- transit: write returned -> socket read returned in the subscriber (kernel,
  server, the reader's wake-up; negative when the read beat the sender's return)
- decode: socket read -> chunk decoded and checked (RESP, envelope, sequence)
- hand-over: decoded -> handler called (queue, dispatcher wake-up or inline)

For the events at or above the run's p99 (and p99.9) the mean of each stage is
printed: the largest is the tail's owner.
"""

from __future__ import annotations

from typing import Any

STAGES = (
    ("schedule", "intended -> publish call"),
    ("publish", "publish call -> write returned"),
    ("transit", "write -> socket read (kernel, server, wake-up)"),
    ("decode", "socket read -> decoded and checked"),
    ("handover", "decoded -> handler called"),
)


def stage_rows(written: dict[int, int], stages: dict[int, tuple[int, ...]]) -> list[list[int]]:
    """Per event: the five stage durations (ns) and the total, for events seen at both ends."""
    rows = []
    for seq, (intended, call, handler, read, decoded) in stages.items():
        wrote = written.get(seq)
        if wrote is None or not read:
            continue
        rows.append([
            call - intended, wrote - call, read - wrote, decoded - read, handler - decoded,
            handler - intended,
        ])
    return rows


def _at(sorted_values: list[int], fraction: float) -> int:
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def explain(written: dict[int, int], stages: dict[int, tuple[int, ...]]) -> dict[str, Any]:
    """Percentiles of each stage, and each stage's mean among the p99 and p99.9 tails."""
    rows = stage_rows(written, stages)
    if not rows:
        return {"events": 0}
    totals = sorted(row[-1] for row in rows)
    out: dict[str, Any] = {"events": len(rows), "stages": {}}
    tails = {"p99": _at(totals, 0.99), "p99_9": _at(totals, 0.999)}
    for index, (name, _) in enumerate(STAGES):
        values = sorted(row[index] for row in rows)
        entry: dict[str, float] = {
            "p50_us": _at(values, 0.5) / 1e3,
            "p99_us": _at(values, 0.99) / 1e3,
            "p99_9_us": _at(values, 0.999) / 1e3,
            "max_us": values[-1] / 1e3,
        }
        for tail, threshold in tails.items():
            tail_rows = [row[index] for row in rows if row[-1] >= threshold]
            entry[f"mean_in_{tail}_tail_us"] = sum(tail_rows) / len(tail_rows) / 1e3
        out["stages"][name] = entry
    for tail, threshold in tails.items():
        owner = max(out["stages"], key=lambda name: out["stages"][name][f"mean_in_{tail}_tail_us"])
        out[f"{tail}_us"] = threshold / 1e3
        out[f"{tail}_owner"] = owner
    return out


def explain_lines(title: str, summary: dict[str, Any]) -> list[str]:
    """The printed table of :func:`explain`."""
    if not summary.get("events"):
        return [f"explain, {title}: no event was stamped at both ends"]
    lines = [
        f"explain, {title}: per-stage time.time_ns() stamps joined by sequence number, "
        f"{summary['events']:,} events (µs)",
        f"  {'stage':<48}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>10}"
        f"{'mean@p99':>10}{'mean@p99.9':>12}",
    ]
    for name, label in STAGES:
        entry = summary["stages"][name]
        lines.append(
            f"  {name + ': ' + label:<48}{entry['p50_us']:>9.1f}{entry['p99_us']:>9.1f}"
            f"{entry['p99_9_us']:>9.1f}{entry['max_us']:>10.1f}"
            f"{entry['mean_in_p99_tail_us']:>10.1f}{entry['mean_in_p99_9_tail_us']:>12.1f}"
        )
    lines.append(
        f"  tail owner: at or over p99 ({summary['p99_us']:,.1f} µs) {summary['p99_owner']}; "
        f"at or over p99.9 ({summary['p99_9_us']:,.1f} µs) {summary['p99_9_owner']}"
    )
    return lines
